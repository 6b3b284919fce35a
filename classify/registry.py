"""The classifiers `fit` and `compare` know: name -> estimator, hyper-parameter grid, scaling.

Each entry builds a scikit-learn Pipeline (scaler, classifier), so one loop fits, sweeps and
evaluates them all.
"""
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .ensemble import MEMBERS
from .errors import ClassifyError

# scikit-learn and torch are imported inside the builders: the registry's names and grids load
# for the command line's help without them.

SCALINGS = ("standard", "l2", "none")
DEFAULT_SCALING = "standard"  # see README: measured against l2 on flowers5 codes


def make_scaler(kind: str):
    from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler
    if kind == "standard":
        return StandardScaler()
    if kind == "l2":
        return Normalizer(norm="l2")
    if kind == "none":
        return FunctionTransformer(None)  # identity
    raise ClassifyError(f"--scaling {kind}: choose one of {', '.join(SCALINGS)}")


@dataclass(frozen=True)
class ClassifierSpec:
    name: str
    build: Callable[[int], object]   # random_state -> estimator
    grid: dict = field(default_factory=dict)  # parameter -> values, swept on selection data
    scaling: str = None              # fixed scaling (the seed recipe uses none); None: the user's choice
    description: str = ""
    path: bool = False               # sweeps its own grid in one fit (classify/path.py), not GridSearchCV
    members: tuple = ()              # an ensemble of these classifiers (classify/ensemble.py), no estimator

    def pipeline(self, scaling=DEFAULT_SCALING, random_state=0):
        """scikit-learn Pipeline: scaler, then the classifier."""
        from sklearn.pipeline import Pipeline
        return Pipeline([("scale", make_scaler(self.scaling or scaling)), ("clf", self.build(random_state))])

    def param_grid(self) -> dict:
        return {f"clf__{k}": list(v) for k, v in self.grid.items()}


LOG_C = [float(c) for c in np.logspace(-4, 1, 11)]
WEIGHT_DECAYS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]


def _path(param, grid):
    """The multi-head sweep solver for the linear heads: the whole grid in one fit."""
    def build(rs):
        from .path import LogisticPathClassifier
        return LogisticPathClassifier(param=param, grid=grid, random_state=rs)
    return build


def _knn(rs):
    from .heads import CosineKNNClassifier
    return CosineKNNClassifier()


def _head(name, seeded=False, module="heads", **params):
    """One of our estimators, built by class name from classify/heads.py (or torch_heads.py)."""
    def build(rs):
        import importlib
        estimator = getattr(importlib.import_module(f".{module}", __package__), name)
        return estimator(**(dict(params, random_state=rs) if seeded else params))
    return build

CLASSIFIERS = {spec.name: spec for spec in [
    ClassifierSpec("logreg", _path("C", LOG_C), {"C": LOG_C}, path=True,
                   description="multinomial logistic regression (scikit-learn's objective), all 11 C at once"),
    ClassifierSpec("linear", _path("weight_decay", WEIGHT_DECAYS), {"weight_decay": WEIGHT_DECAYS}, path=True,
                   description="linear layer, cross-entropy + weight decay, all 5 values at once"),
    ClassifierSpec("svm", _head("SoftmaxLinearSVC", seeded=True, dual=True, tol=1e-3),
                   # Above C=0.01 liblinear converges slowly and flowers5 accuracy only drops.
                   {"C": [float(c) for c in np.logspace(-5, -2, 4)]}, description="linear SVM, C swept"),
    ClassifierSpec("knn", _knn,
                   {"n_neighbors": [1, 3, 5, 10, 20], "weights": ["uniform", "distance"]},
                   description="k nearest neighbours (cosine), k swept"),
    ClassifierSpec("ridge", _head("SoftmaxRidgeClassifier"),
                   {"alpha": [float(a) for a in np.logspace(-1, 4, 6)]}, description="ridge classifier, alpha swept"),
    ClassifierSpec("centroid", _head("NearestCentroidClassifier"), description="nearest class mean"),
    ClassifierSpec("mlp", _head("TorchMLPClassifier", seeded=True, module="torch_heads"),
                   {"weight_decay": [1e-4, 1e-2]}, description="one hidden layer (512, ReLU, dropout), AdamW"),
    ClassifierSpec("seed", _head("SeedRecipeClassifier", seeded=True, module="torch_heads"), scaling="none",
                   description="the classic exercise: SGD lr 0.001, batch 20, 2 epochs, raw codes"),
    ClassifierSpec("ensemble", None, members=MEMBERS,
                   description="mean probability of logreg, linear, svm, ridge and mlp, each swept as alone"),
]}


def get_classifier(name: str) -> ClassifierSpec:
    try:
        return CLASSIFIERS[name]
    except KeyError:
        raise ClassifyError(f"--classifier {name}: choose one of {', '.join(CLASSIFIERS)}") from None
