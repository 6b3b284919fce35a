"""Model files: a fitted pipeline as plain arrays in one .npz, loaded without running any code
from the file, back into the very estimator classes that were evaluated.

Layout: ``meta`` (a JSON string: classifier, params, class names, layer, the cache fingerprint,
result, and for each of the two steps its class name, constructor parameters and which arrays
hold its fitted state), ``scale__<attr>`` and ``clf__<attr>`` arrays; an ensemble lists its
``members``, each with its own steps, arrays prefixed ``m<i>:``. Loading checks each class
name against a fixed list, builds it with its parameters and sets the fitted attributes, so
`predict` runs the same scikit-learn / cnncodes code as `fit` and `compare` did.
"""
import json
import os

import numpy as np

from .errors import ClassifyError

FORMAT = "cnncodes-model-2"


class ModelFileError(ClassifyError):
    pass


def _known_classes() -> dict:
    """The only classes a model file may name (nothing else is ever instantiated): the scalers and
    the registry's heads (classify/registry.py)."""
    from .heads.scaling import scaler_classes
    from .registry import head_classes
    known = {cls.__name__: cls for cls in scaler_classes()} | head_classes()
    # Files written before the sweep estimator got its scikit-learn name keep reading.
    return known | {"LogisticPathClassifier": known["LogisticSweepCV"]}


def _fitted_state(step) -> tuple:
    """(arrays, scalars): the public fitted attributes (scikit-learn's trailing underscore)."""
    arrays, scalars = {}, {}
    for name, value in vars(step).items():
        if not name.endswith("_") or name.startswith("_"):
            continue
        if isinstance(value, np.ndarray) and value.dtype != object:
            arrays[name] = value
        elif isinstance(value, (int, float, str, bool, np.integer, np.floating)) or value is None:
            scalars[name] = value.item() if isinstance(value, np.generic) else value
        elif isinstance(value, dict) and all(isinstance(v, (int, float, str)) for v in value.values()):
            scalars[name] = value
        # Anything else (lists of sweep results, helper objects) is not needed to predict.
    if "classes_" not in arrays and hasattr(step, "classes_"):  # a property on some estimators
        arrays["classes_"] = np.asarray(step.classes_)
    return arrays, scalars


PLAIN = (type(None), bool, int, float, str)


def _params(step) -> dict:
    """Constructor parameters that JSON holds as they are. Others are left at their defaults when
    the file loads: a callable (FunctionTransformer(func=None) only) never travels in a file, nor
    does a sweep's ``cv`` (index arrays of the rows it was fitted on, which predicting never uses)."""
    params = {}
    for key, value in step.get_params(deep=False).items():
        if isinstance(value, (tuple, list)) and all(isinstance(v, PLAIN) for v in value):
            params[key] = list(value)
        elif isinstance(value, PLAIN):
            params[key] = value
    return params


def _pipeline_state(pipeline, prefix="") -> tuple:
    """(steps meta, arrays) of one fitted (scale, clf) pipeline; array names start with ``prefix``."""
    steps, arrays = {}, {}
    for step_name in ("scale", "clf"):
        step = pipeline.named_steps[step_name]
        state, scalars = _fitted_state(step)
        steps[step_name] = {"class": type(step).__name__, "params": _params(step), "scalars": scalars,
                            "arrays": sorted(state)}
        arrays.update({f"{prefix}{step_name}__{k}": v for k, v in state.items()})
    return steps, arrays


def model_meta(classifier: str, result, data) -> dict:
    """What a model file records beside the fitted estimators: the classifier and its chosen
    parameters, the class names, the layer(s), the cache's fingerprint (exactly
    ``Fingerprint.to_attrs()``, so predict rebuilds the same extractor), the cache, any other
    caches' codes that went side by side, and the result without its sweep and mistakes."""
    return {"classifier": classifier, "params": result.params, "class_names": list(data.class_names),
            "layer": data.layer, "fingerprint": data.fingerprint, "cache": data.path,
            "side_by_side": data.side_by_side or [],
            "result": result.without_details()}


def _json_value(value):
    """JSON for what json.dumps cannot write itself: a Fingerprint as its attributes."""
    return value.to_attrs() if hasattr(value, "to_attrs") else str(value)


def save_model(path, pipeline, meta: dict) -> None:
    """``pipeline``: a fitted (scale, clf) Pipeline, or an ensemble's soft vote of them.
    meta: ``model_meta(...)`` (fingerprints are written as their attributes)."""
    if not hasattr(pipeline, "named_estimators_"):
        steps, arrays = _pipeline_state(pipeline)
        meta = dict(meta, format=FORMAT, steps=steps)
    else:  # an ensemble: each member's pipeline under its own prefix, and the vote's classes
        from .heads.ensemble import members_of
        arrays, parts = {}, []
        for i, (name, member) in enumerate(members_of(pipeline)):
            steps, member_arrays = _pipeline_state(member, f"m{i}:")
            parts.append({"name": name, "steps": steps})
            arrays.update(member_arrays)
        meta = dict(meta, format=FORMAT, members=parts, classes=np.asarray(pipeline.classes_).tolist())
    tmp = f"{path}.tmp.npz"  # np.savez adds .npz to names without it
    np.savez(tmp, meta=np.array(json.dumps(meta, default=_json_value)), **arrays)
    os.replace(tmp, path)


def _rebuild(step_meta, arrays, step_name, known):
    cls = known.get(step_meta["class"])
    if cls is None:
        raise ModelFileError(f"unknown estimator {step_meta['class']!r} in the model file")
    step = cls(**step_meta["params"])
    read_only = {}
    values = dict(step_meta["scalars"], **{k: arrays[f"{step_name}__{k}"] for k in step_meta["arrays"]})
    for key, value in values.items():
        try:
            setattr(step, key, value)
        except AttributeError:  # a read-only property (RidgeClassifier.classes_): restore() sets it
            read_only[key] = value
    if hasattr(step, "restore"):  # estimators whose fitted state is more than arrays (knn's index)
        step.restore(**read_only)
    return step


def codes_of(meta) -> tuple:
    """(class names, layer, Fingerprint, side-by-side parts) of a model's meta: the codes it takes.
    The fingerprints are objects (a fit's meta) or their attributes (a file's)."""
    from ..cache.fingerprint import Fingerprint

    def typed(fp):
        return fp if isinstance(fp, Fingerprint) else Fingerprint.from_attrs(fp)
    # other caches whose codes went side by side (classify/joined.py): [{cache, layer, fingerprint, width}]
    parts = [dict(part, fingerprint=typed(part["fingerprint"])) for part in meta.get("side_by_side") or []]
    return list(meta["class_names"]), meta["layer"], typed(meta["fingerprint"]), parts


class LoadedModel:
    """A fitted pipeline rebuilt from a model file, with its class names and fingerprint."""

    def __init__(self, meta, arrays):
        from sklearn.pipeline import Pipeline
        self.meta = meta
        self.class_names, self.layer, self.fingerprint, self.side_by_side = codes_of(meta)
        known = _known_classes()

        def rebuild(steps, prefix=""):
            return Pipeline([(name, _rebuild(steps[name], arrays, prefix + name, known)) for name in ("scale", "clf")])
        if "members" in meta:
            from .heads.ensemble import soft_vote
            members = [(m["name"], rebuild(m["steps"], f"m{i}:")) for i, m in enumerate(meta["members"])]
            self.pipeline = soft_vote(members, meta.get("classes", members[0][1].classes_))
        else:
            self.pipeline = rebuild(meta["steps"])
        self.classes = self.pipeline.classes_  # label indices, in predict_proba's column order

    def predict_proba(self, X):
        return self.pipeline.predict_proba(np.asarray(X, dtype=np.float32))

    def predict(self, X):
        """Label indices into class_names."""
        return self.pipeline.predict(np.asarray(X, dtype=np.float32))

    def predict_names(self, X) -> list:
        return [self.class_names[int(i)] for i in self.predict(X)]


def read_model_file(path) -> LoadedModel:
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file; create one with "
                             f"`cnncodes fit CACHE --model {path}`")
    try:
        with np.load(path, allow_pickle=False) as f:  # plain arrays only: loading runs no code
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as exc:
        raise ModelFileError(f"{path}: not a cnncodes model file ({exc}); "
                             "re-create it with `cnncodes fit`") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: model format {meta.get('format')!r}, expected {FORMAT}; re-create it with "
                             "`cnncodes fit`")
    try:
        return LoadedModel(meta, arrays)
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: incomplete model file ({exc}); re-create it with `cnncodes fit`") from None
