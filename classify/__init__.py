"""Stage two: classifiers on cached codes, compared on identical splits.

Rooms: heads/ (the estimators and their solvers), the fit/compare workflow here (registry,
evaluate, splits, budget, stream, joined, report, model_file), audit/ (what is wrong with the data)
and deploy/ (predict, ONNX export and runtime, the HTTP service: above both stages). Heads and the
workflow never import audit or deploy (tests/test_import_rules.py).

Names load on first use, so importing the package costs no scikit-learn or torch import.
"""
import importlib

_LAZY = {"CodesData": "data", "compare": "evaluate", "fit_and_evaluate": "evaluate", "read_codes": "data",
         "metrics": "stats",
         "LoadedModel": "model_file", "ModelFileError": "model_file", "read_model_file": "model_file",
         "save_model": "model_file", "CLASSIFIERS": "registry", "DEFAULT_SCALING": "heads.scaling",
         "SCALINGS": "heads.scaling", "get_classifier": "registry", "SplitError": "splits", "plan_splits": "splits",
         "ClassifyError": "errors", "FitResult": "result", "Skipped": "result"}

__all__ = list(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
