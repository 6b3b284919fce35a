"""cnncodes: transfer learning on frozen CNN features.

Every image goes through a pretrained network once; its codes land in one crash-safe HDF5 cache;
classifiers train on the cached codes in seconds. The whole workflow from Python::

    import cnncodes
    summary = cnncodes.extract_codes("photos/", "codes.h5", backbone="efficientnet_lite0")
    model = cnncodes.fit("codes.h5", "logreg")
    model.predict_images(["new.jpg"])

Names load on first use: ``import cnncodes`` imports no torch (nor scikit-learn).
"""
import importlib
import os

from ._openmp import spin_briefly

spin_briefly()  # before any torch loads: libgomp reads it once (cnncodes/_openmp.py)

# A checkout that was not installed: the three stage folders beside this one are its sub-packages
# (an installed wheel holds them inside this folder; an editable install maps them the same way).
# Only those three: the checkout's other folders (bench, tests, docs) are not cnncodes's.
_HERE = os.path.dirname(os.path.abspath(__file__))
_CHECKOUT = os.path.dirname(_HERE)
_STAGES = ("extract", "cache", "classify")


class _StageFolders:
    """Finds cnncodes.extract, .cache and .classify in the checkout's folders of those names."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        from importlib.util import spec_from_file_location
        package, _, stage = name.partition(".")
        if package != __name__ or stage not in _STAGES:
            return None
        folder = os.path.join(_CHECKOUT, stage)
        return spec_from_file_location(name, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])


if not os.path.isdir(os.path.join(_HERE, "extract")) and all(
        os.path.isfile(os.path.join(_CHECKOUT, name, "__init__.py")) for name in _STAGES):
    import sys
    sys.meta_path.append(_StageFolders)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("cnncodes")
    except PackageNotFoundError:  # a checkout that was not installed
        return "0+unknown"


__version__ = _version()

# face name -> module (relative to this package) that defines it: the workflow layer, one module a verb
_LAZY = {
    "list_backbones": "api.backbones", "extract_codes": "api.extract", "load_codes": "api.codes",
    "fit": "api.fit", "load_model": "api.fit", "Model": "api.model", "predict": "api.model",
    "compare": "api.compare", "Comparison": "api.compare", "FitResult": "classify.result",
    "audit": "api.audit", "verify": "api.verify", "open_cache": "cache",
    "rank_backbones": "api.rank", "similar": "api.similar", "select": "api.select",
    "simulate_selection": "api.select", "Encoder": "api.encoder", "CodesTransformer": "api.transformer",
    "index": "api.index",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
