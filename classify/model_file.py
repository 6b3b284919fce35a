"""Model files: a fitted pipeline as plain arrays in one .npz, loaded without running any code.

Layout: ``meta`` (a JSON string: classifier, params, class names, layer, the cache fingerprint,
scaling, head kind, result), ``scale_*`` arrays for the scaler and ``head_*`` arrays for the
classifier. Head kinds: ``linear`` (coef [C, D], intercept [C]; softmax of the scores, which is
exactly predict_proba for logreg and the linear layers), ``mlp`` (two layers) and ``knn`` (its
training codes and labels; the estimator is rebuilt and refit on them at load).
"""
import json
import os

import numpy as np
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import normalize

from .heads import linear_form, softmax

FORMAT = "cnncodes-model-1"


class ModelFileError(ValueError):
    pass


def _scaler_arrays(scaler) -> tuple:
    if hasattr(scaler, "mean_"):
        return "standard", {"scale_mean": scaler.mean_, "scale_scale": scaler.scale_}
    if type(scaler).__name__ == "Normalizer":
        return "l2", {}
    return "none", {}


def _head_arrays(clf) -> tuple:
    if isinstance(clf, KNeighborsClassifier):
        return "knn", {"head_X": clf._fit_X, "head_y": clf.classes_[clf._y],
                       "head_classes": clf.classes_}, {"n_neighbors": clf.n_neighbors, "weights": clf.weights,
                                                       "metric": clf.metric}
    if hasattr(clf, "w1_"):
        return "mlp", {"head_w1": clf.w1_, "head_b1": clf.b1_, "head_w2": clf.w2_, "head_b2": clf.b2_,
                       "head_classes": clf.classes_}, {}
    if hasattr(clf, "coef_"):
        coef, intercept = linear_form(clf.coef_, clf.intercept_)
        return "linear", {"head_coef": coef, "head_intercept": intercept, "head_classes": clf.classes_}, {}
    raise ModelFileError(f"no array form for {type(clf).__name__}")


def save_model(path, pipeline, meta: dict) -> None:
    scaler, clf = pipeline.named_steps["scale"], pipeline.named_steps["clf"]
    scaling, scale_arrays = _scaler_arrays(scaler)
    kind, head_arrays, head_params = _head_arrays(clf)
    meta = dict(meta, format=FORMAT, scaling=scaling, head=kind, head_params=head_params)
    tmp = f"{path}.tmp.npz"  # np.savez adds .npz to names without it
    np.savez(tmp, meta=np.array(json.dumps(meta, default=str)), **scale_arrays, **head_arrays)
    os.replace(tmp, path)


class LoadedModel:
    """A fitted model rebuilt from arrays: transform, predict_proba, predict (class indices)."""

    def __init__(self, meta, arrays):
        self.meta = meta
        self.class_names = meta["class_names"]
        self.fingerprint = meta["fingerprint"]
        self.layer = meta["layer"]
        self.classes = arrays["head_classes"]  # class indices, in the column order of predict_proba
        self._arrays = arrays
        self._knn = None
        if meta["head"] == "knn":
            p = meta["head_params"]
            self._knn = KNeighborsClassifier(n_neighbors=p["n_neighbors"], weights=p["weights"], metric=p["metric"],
                                             algorithm="brute").fit(arrays["head_X"], arrays["head_y"])

    def transform(self, X):
        X = np.asarray(X, dtype=np.float32)
        if self.meta["scaling"] == "standard":
            # In the input dtype, as StandardScaler.transform computes it.
            return (X - self._arrays["scale_mean"].astype(X.dtype)) / self._arrays["scale_scale"].astype(X.dtype)
        if self.meta["scaling"] == "l2":
            return normalize(X)
        return X

    def predict_proba(self, X):
        Z = self.transform(X)
        a = self._arrays
        kind = self.meta["head"]
        if kind == "linear":
            return softmax(np.asarray(Z, np.float64) @ a["head_coef"].T + a["head_intercept"])
        if kind == "mlp":
            h = np.maximum(np.asarray(Z, np.float64) @ a["head_w1"].T + a["head_b1"], 0)
            return softmax(h @ a["head_w2"].T + a["head_b2"])
        return self._knn.predict_proba(Z)

    def predict(self, X):
        """Class indices into class_names."""
        return self.classes[self.predict_proba(X).argmax(axis=1)]


def load_model(path) -> LoadedModel:
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file; create one with `python pipeline.py fit CACHE --model {path}`")
    try:
        with np.load(path, allow_pickle=False) as f:  # plain arrays only: loading runs no code
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as exc:
        raise ModelFileError(f"{path}: not a cnncodes model file ({exc}); re-create it with `pipeline.py fit`") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: model format {meta.get('format')!r}, expected {FORMAT}; re-create it with `pipeline.py fit`")
    return LoadedModel(meta, arrays)
