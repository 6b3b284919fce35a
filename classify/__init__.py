"""Stage two: classifiers on cached codes, compared on identical splits.

Names load on first use, so importing the package costs no scikit-learn or torch import.
"""
import importlib

_LAZY = {"CodesData": "evaluate", "compare": "evaluate", "fit_and_evaluate": "evaluate", "load_codes": "evaluate",
         "metrics": "evaluate",
         "LoadedModel": "model_file", "ModelFileError": "model_file", "load_model": "model_file",
         "save_model": "model_file", "CLASSIFIERS": "registry", "DEFAULT_SCALING": "scaling",
         "SCALINGS": "scaling", "get_classifier": "registry", "SplitError": "splits", "plan_splits": "splits",
         "ClassifyError": "errors"}

__all__ = list(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
