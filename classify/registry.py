"""The classifiers `fit` and `compare` know: name -> one scikit-learn estimator, grid and scaling.

Each entry builds the estimator that fits it on the split plan's rows, sweep included
(``ClassifierSpec.estimator``): GridSearchCV over a (scaler, classifier) Pipeline, a Pipeline
whose LogisticSweepCV sweeps its own grid, that sweep streamed (StreamedSweep) where the codes
exceed the memory budget, or a soft vote of other entries. So one loop fits them all. The entries
marked ``maps`` train the network's own top on an unpooled map layer (classify/heads/network_top.py);
the others need codes, and each kind refuses the other's layers in one line.
"""
from dataclasses import dataclass, field

import numpy as np

from .heads.ensemble import MEMBERS
from .errors import ClassifyError
from .heads.scaling import DEFAULT_SCALING, make_scaler

# scikit-learn and torch are imported inside the builders: the registry's names and grids load
# for the command line's help without them.


@dataclass(frozen=True)
class ClassifierSpec:
    """One classifier, and everything the rest of the code needs to know about its head: adding a
    head is its class and one entry here. The model file's allow-list, the ONNX exporter and the
    scikit-learn estimator checks all read these entries."""
    name: str
    head: object = None              # "module:Class" under classify/heads/, or a class (None: a vote of members)
    grid: dict = field(default_factory=dict)  # parameter -> values, swept on selection data
    params: dict = field(default_factory=dict)  # the head's constructor parameters
    seeded: bool = False             # takes random_state
    scaling: str = None              # fixed scaling (the seed recipe uses none); None: the user's choice
    description: str = ""
    sweeps: bool = False             # a LogisticSweepCV: sweeps its own grid in one fit, and can stream
    members: tuple = ()              # a soft vote of these classifiers (classify/heads/ensemble.py)
    maps: bool = False               # trains the network's top on a map layer; built with the map's source
    export: str = "affine"           # how deploy/onnx_export.py writes its scores (EXPORTS there), or
    no_export: str = None            # why it is not exported (export-model refuses in this one line)
    check_params: tuple = ({},)      # constructor parameters for scikit-learn's estimator checks (none: ())

    def estimator_class(self):
        """The head's class (imported on first use: the registry loads for --help without them)."""
        if not isinstance(self.head, str):
            return self.head
        import importlib
        module, name = self.head.split(":")
        return getattr(importlib.import_module(f".heads.{module}", __package__), name)

    def build(self, random_state=0, **source):
        """The unfitted head. source: a map head's map layer (``check_layer``)."""
        params = dict(self.params, **source)
        if self.seeded:
            params["random_state"] = random_state
        return self.estimator_class()(**params)

    def pipeline(self, scaling=DEFAULT_SCALING, random_state=0, source=None):
        """scikit-learn Pipeline: scaler, then the classifier. source: the map layer's backbone,
        weights, layer and map_shape (``map_source``), for the heads that train a network's top."""
        from sklearn.pipeline import Pipeline
        clf = self.build(random_state, **(source or {}))
        return Pipeline([("scale", make_scaler(self.scaling or scaling)), ("clf", clf)])

    def check_layer(self, layer: str, fingerprint, cache="the cache") -> dict:
        """The map source for a map head (None for the others); a layer of the other kind is
        refused in one line."""
        maps = fingerprint.maps_in(layer) if fingerprint is not None else []
        if self.maps and maps != [layer]:  # one map layer alone
            raise ClassifyError(f"classifier={self.name}: trains the network's own top on one unpooled map layer, "
                                f"and {cache} layer {layer} holds pooled codes; extract a map layer (layer="
                                "pool5_map for vgg16, stage7_map for efficientnet_lite*) and fit with layer=NAME")
        if not self.maps and maps:
            raise ClassifyError(f"classifier={self.name}: needs pooled codes, and {cache} layer {maps[0]} is an "
                                f"unpooled map; fit classifier={' or '.join(MAP_HEADS)} on it, or choose a layer "
                                "of codes with layer=")
        if not self.maps:
            return None
        return {"backbone": fingerprint.backbone, "weights": fingerprint.weights, "layer": layer,
                "map_shape": list(fingerprint.map_shapes[layer])}

    def tunable(self) -> list:
        """The hyper-parameters a caller may fix: the swept ones, then the head's other constructor
        parameters (those the registry sets itself, such as the seed and a map head's source, excepted)."""
        if self.head is None:
            return []
        import inspect
        own = [name for name in inspect.signature(self.estimator_class().__init__).parameters
               if name not in ("self", "random_state", "param", "grid", "cv", "backbone", "weights", "layer",
                               "map_shape", "recipe")]
        return list(self.grid) + [name for name in own if name not in self.grid]

    def with_params(self, fixed: dict) -> "ClassifierSpec":
        """This classifier with hyper-parameters fixed by the caller: a swept one is no longer swept
        (its grid is that one value), any other constructor parameter is set. A name the head does not
        take is refused, naming the closest."""
        if not fixed:
            return self
        from dataclasses import replace
        if self.members:
            raise ClassifyError(f"{self.name} is a soft vote of {', '.join(self.members)}, each swept as alone; it "
                                "takes no hyper-parameters (fit a member alone to fix one)")
        tunable = self.tunable()
        for name in fixed:
            if name not in tunable:
                raise ClassifyError(f"{self.name} has no hyper-parameter {name!r}{did_you_mean(name, tunable)}; "
                                    f"it takes {', '.join(tunable) or 'none'}")
        grid = {k: ([fixed[k]] if k in fixed else v) for k, v in self.grid.items()}
        params = dict(self.params, **{k: v for k, v in fixed.items() if k not in self.grid})
        if self.sweeps:  # a LogisticSweepCV sweeps its own grid: it gets the one value
            params["grid"] = grid[params["param"]]
        return replace(self, grid=grid, params=params)

    def param_grid(self) -> dict:
        return {f"clf__{k}": list(v) for k, v in self.grid.items()}

    def estimator(self, cv, scaling=DEFAULT_SCALING, random_state=0, streamed=False, fitted=None, source=None):
        """The unfitted estimator whose ``fit(X, y)`` on the fit rows is this classifier's whole fit:
        hyper-parameters chosen over ``cv`` ((train, selection) index pairs over those rows, the split
        plan's), then refitted on every one. streamed: X will be StreamedRows (codes beyond the budget).
        fitted: name -> a model fitted on the same rows already, which an ensemble reuses.
        source: a map head's map layer (``check_layer``)."""
        if self.members:
            from .heads.ensemble import voting
            fitted = fitted or {}
            return voting([(m, fitted[m], True) if m in fitted else
                           (m, get_classifier(m).estimator(cv, scaling, random_state), False) for m in self.members])
        if streamed:
            from .heads.sweep import StreamedSweep
            return StreamedSweep(self.build(random_state), self.scaling or scaling, cv, random_state)
        pipeline = self.pipeline(scaling, random_state, source)
        if self.sweeps:
            return pipeline.set_params(clf__cv=cv)
        grid = _feasible(self.param_grid(), min(len(train) for train, _ in cv))
        if not grid:
            return pipeline
        from sklearn.model_selection import GridSearchCV
        return GridSearchCV(pipeline, grid, cv=cv, scoring="accuracy", refit=True,
                            n_jobs=1, error_score="raise")  # parallel sweeps measured no faster (docs/benchmarks.md)


def _feasible(grid: dict, n_train: int) -> dict:
    """Drop neighbour counts larger than the rows that train during the sweep (tiny data sets)."""
    if "clf__n_neighbors" in grid:
        grid = dict(grid, clf__n_neighbors=[k for k in grid["clf__n_neighbors"] if k <= n_train] or [1])
    return grid


LOG_C = [float(c) for c in np.logspace(-4, 1, 11)]
WEIGHT_DECAYS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]


CLASSIFIERS = {spec.name: spec for spec in [
    ClassifierSpec("logreg", "sweep:LogisticSweepCV", {"C": LOG_C}, {"param": "C", "grid": LOG_C}, seeded=True,
                   sweeps=True, check_params=({"param": "C", "grid": (1.0,)}, {"param": "C", "grid": (0.1, 1.0), "cv": 2}),
                   description="multinomial logistic regression (scikit-learn's objective), all 11 C at once"),
    ClassifierSpec("linear", "sweep:LogisticSweepCV", {"weight_decay": WEIGHT_DECAYS},
                   {"param": "weight_decay", "grid": WEIGHT_DECAYS}, seeded=True, sweeps=True,
                   check_params=({"param": "weight_decay", "grid": (1e-3,)},),
                   description="linear layer, cross-entropy + weight decay, all 5 values at once"),
    ClassifierSpec("svm", "linear:SoftmaxLinearSVC",
                   # Above C=0.01 liblinear converges slowly and flowers5 accuracy only drops.
                   {"C": [float(c) for c in np.logspace(-5, -2, 4)]}, {"dual": True, "tol": 1e-3}, seeded=True,
                   description="linear SVM, C swept"),
    ClassifierSpec("knn", "linear:CosineKNNClassifier",
                   {"n_neighbors": [1, 3, 5, 10, 20], "weights": ["uniform", "distance"]},
                   no_export="knn keeps every training code and votes among them, which is no graph worth shipping; "
                             "export logreg, linear, svm, ridge, mlp, the ensemble or a top",
                   description="k nearest neighbours (cosine), k swept"),
    ClassifierSpec("ridge", "linear:SoftmaxRidgeClassifier", {"alpha": [float(a) for a in np.logspace(-1, 4, 6)]},
                   description="ridge classifier, alpha swept"),
    ClassifierSpec("centroid", "linear:NearestCentroidClassifier", description="nearest class mean"),
    ClassifierSpec("mlp", "torch_heads:TorchMLPClassifier", {"weight_decay": [1e-4, 1e-2]}, seeded=True,
                   export="mlp", check_params=({"hidden": 32, "epochs": 30},),
                   description="one hidden layer (512, ReLU, dropout), AdamW"),
    ClassifierSpec("seed", "torch_heads:SeedRecipeClassifier", seeded=True, scaling="none",
                   description="the classic exercise: SGD lr 0.001, batch 20, 2 epochs, raw codes"),
    ClassifierSpec("ensemble", members=MEMBERS,
                   description="mean probability of logreg, linear, svm, ridge and mlp, each swept as alone"),
    ClassifierSpec("top", "network_top:NetworkTopClassifier", {"lr": [1e-4, 3e-4]}, {"recipe": "adamw"},
                   seeded=True, scaling="none", maps=True, export="network",
                   check_params=({"backbone": "efficientnet_lite0", "weights": "random:0", "layer": "stage7_map",
                                  "map_shape": (320, 1, 1), "epochs": 2, "device": "cpu"},),
                   description="the network's own top on a cached map (VGG16 fc6, fc7 + new fc8; EfficientNet-Lite "
                               "head conv + new classifier), pretrained start, AdamW + cosine, lr swept"),
    ClassifierSpec("seed-top", "network_top:NetworkTopClassifier", params={"recipe": "seed"}, seeded=True,
                   scaling="none", maps=True, export="network", check_params=(),
                   description="the classic exercise exactly, on cached maps: the top from pretrained weights, new "
                               "final layer, SGD lr 0.001 (momentum 0.9), batch 20, 2 epochs, its dropout"),
]}
MAP_HEADS = tuple(name for name, spec in CLASSIFIERS.items() if spec.maps)
CODE_HEADS = tuple(name for name, spec in CLASSIFIERS.items() if not spec.maps)


def classifiers_for(layer: str, fingerprint) -> list:
    """The classifiers that fit ``layer``: the map heads on a map layer, the others on codes."""
    return list(MAP_HEADS if fingerprint is not None and fingerprint.maps_in(layer) else CODE_HEADS)


def spec_of_head(head) -> ClassifierSpec:
    """The first entry whose head is ``head``'s class (logreg and linear share one class and its export)."""
    for spec in CLASSIFIERS.values():
        if spec.head and type(head) is spec.estimator_class():
            return spec
    raise ClassifyError(f"{type(head).__name__} is not a registered head (classify/registry.py)")


def head_classes() -> dict:
    """class name -> class of every registered head: what a model file may name."""
    return {cls.__name__: cls for cls in (spec.estimator_class() for spec in CLASSIFIERS.values() if spec.head)}


def did_you_mean(name, choices) -> str:
    """" (did you mean X?)" for the closest of ``choices``, or ""."""
    import difflib
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    if not close:
        close = [c for c in map(str, choices) if c.lower() == str(name).lower()]
    return f" (did you mean {close[0]!r}?)" if close else ""


def get_classifier(name: str) -> ClassifierSpec:
    try:
        return CLASSIFIERS[name]
    except KeyError:
        raise ClassifyError(f"classifier={name}: unknown{did_you_mean(name, CLASSIFIERS)}; choose one of "
                            f"{', '.join(CLASSIFIERS)}") from None
