"""Stage two: classifiers on cached codes, compared on identical splits."""
from .evaluate import CodesData, fit_and_evaluate, load_codes, metrics
from .model_file import LoadedModel, ModelFileError, load_model, save_model
from .registry import CLASSIFIERS, DEFAULT_SCALING, SCALINGS, get_classifier
from .splits import SplitError, plan_splits

__all__ = ["CodesData", "fit_and_evaluate", "load_codes", "metrics", "LoadedModel", "ModelFileError",
           "load_model", "save_model", "CLASSIFIERS", "DEFAULT_SCALING", "SCALINGS", "get_classifier",
           "SplitError", "plan_splits"]
