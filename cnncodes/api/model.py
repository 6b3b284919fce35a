"""A fitted model as one object: the scikit-learn pipeline, what it was trained on, its result."""
import os
from typing import NamedTuple

import numpy as np


class Predictions(NamedTuple):
    """predict's answer, a pair: ``predictions`` (each {path, label, probability, top_k}, in the
    order given) and ``failures`` (each (path, reason)); ``predictions, failures = predict(...)``."""
    predictions: list
    failures: list

    def to_dict(self) -> dict:
        """What `cnncodes predict --json` prints."""
        return {"predictions": self.predictions,
                "failures": [{"path": path, "reason": reason} for path, reason in self.failures]}

    def __repr__(self) -> str:
        shown = ", ".join(f"{os.path.basename(str(p['path']))}: {p['label']}" for p in self.predictions[:3])
        more = ", ..." if len(self.predictions) > 3 else ""
        return f"Predictions({len(self.predictions)} images: {shown}{more}; {len(self.failures)} failed)"


class Model:
    """What ``cnncodes.fit`` returns and ``cnncodes.load_model`` reads back.

    .pipeline: the fitted scikit-learn Pipeline (scale, classifier), or an ensemble's soft vote.
    .result: the fit's FitResult (accuracy and its interval, params, sweep, mistakes; loaded from a
    file: without the sweep and mistakes, or None where the file was written before results were kept). .class_names, .layer, .fingerprint: the codes
    it takes (the cache's extractor, so predict_images encodes new photos exactly as they were).
    """

    def __init__(self, pipeline, meta: dict, result=None, path: str = None):
        from ..classify.model_file import codes_of
        from ..classify.result import FitResult
        self.pipeline, self.meta, self.path = pipeline, meta, path
        if result is None and meta.get("result"):
            result = FitResult.from_dict(meta["result"])
        self.result = result
        self.classifier = meta["classifier"]
        self.class_names, self.layer, self.fingerprint, self.side_by_side = codes_of(meta)

    @classmethod
    def from_loaded(cls, loaded, path=None) -> "Model":
        return cls(loaded.pipeline, loaded.meta, path=path)

    @property
    def classes(self) -> np.ndarray:
        """Label indices into class_names, in predict_proba's column order."""
        return self.pipeline.classes_

    @property
    def columns(self) -> list:
        """Class names in predict_proba's column order."""
        return [self.class_names[int(i)] for i in self.classes]

    def predict_proba(self, X) -> np.ndarray:
        """X: codes [n, D] of this model's layer. Columns in ``columns`` order (class names)."""
        return self.pipeline.predict_proba(np.asarray(X, dtype=np.float32))

    def predict(self, X) -> list:
        """Class names for codes [n, D]."""
        return [self.class_names[int(i)] for i in self.pipeline.predict(np.asarray(X, dtype=np.float32))]

    def predict_images(self, images, *, top_k=3, weights=None, device="auto", tta=False, precision=None):
        """Classify image files, folders, PIL images or uint8 arrays (one, or a list): the cache's
        extractor, then this model. Returns (predictions, failures) as predict() does."""
        return predict(self, images, top_k=top_k, weights=weights, device=device, tta=tta, precision=precision)

    def save(self, path) -> str:
        """One .npz file (plain arrays and JSON: loading it runs no code)."""
        from ..classify.model_file import save_model
        save_model(os.fspath(path), self.pipeline, self.meta)
        self.path = os.fspath(path)
        return self.path

    def to_dict(self) -> dict:
        """What `cnncodes fit --json` prints: the result's JSON, and the file once saved."""
        out = self.result.to_dict() if self.result is not None else {"classifier": self.classifier}
        return out | ({"model": self.path} if self.path else {})

    def export_onnx(self, path, *, weights=None) -> dict:
        """One ONNX file, image -> probabilities (what `cnncodes export-model` writes)."""
        from ..classify.deploy.onnx_export import export_onnx
        return export_onnx(self, os.fspath(path), weights_file=weights)

    def __repr__(self):
        accuracy = f", accuracy {self.result.accuracy:.4f}" if self.result is not None else ""
        return (f"Model({self.classifier} on {self.fingerprint.backbone} {self.layer}, "
                f"{len(self.class_names)} classes{accuracy})")


def predict(model, images, *, top_k=3, runtime=None, weights=None, device="auto", tta=False, precision=None):
    """Classify images with a model file (.npz through torch, .onnx through ONNX Runtime unless
    ``runtime`` says) or a Model. images: image files, folders, PIL images or uint8 arrays (one
    alone, or a list). Returns Predictions, the pair (predictions, failures): each prediction
    {path, label, probability, top_k}; each failure (path, reason). An image given in memory is
    named "image I (a PIL image)"."""
    import tempfile

    from ._inputs import as_list, images_as_files, is_image
    images = as_list(images)
    if not any(is_image(image) for image in images):
        return Predictions(*_predict_files(model, images, top_k=top_k, runtime=runtime, weights=weights,
                                           device=device, tta=tta, precision=precision))
    with tempfile.TemporaryDirectory(prefix="cnncodes-predict-") as folder:
        paths, shown = images_as_files(images, folder)
        name_of = {path: name for path, name in zip(paths, shown) if path.startswith(folder)}
        predictions, failures = _predict_files(model, paths, top_k=top_k, runtime=runtime, weights=weights,
                                               device=device, tta=tta, precision=precision)
    for prediction in predictions:
        prediction["path"] = name_of.get(prediction["path"], prediction["path"])
    return Predictions(predictions, [(name_of.get(path, path), reason) for path, reason in failures])


def _predict_files(model, images, *, top_k, runtime, weights, device, tta, precision):
    from ..classify.errors import ClassifyError
    path = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    runtime = runtime or ("onnxruntime" if path and path.endswith(".onnx") else "torch")
    if runtime == "onnxruntime":  # no torch imported on this path
        if tta or weights:
            raise ClassifyError("runtime='onnxruntime': the graph holds its weights and one view; drop tta/weights")
        if path is None:
            raise ClassifyError("runtime='onnxruntime' runs an exported file: model.export_onnx(path), then "
                                "predict(path, ...)")
        from ..classify.deploy.onnx_predict import predict_images_onnx
        return predict_images_onnx(path, list(images), top_k=top_k)
    from ..classify.deploy.predict import predict_images
    return predict_images(model if path is None else path, list(images), top_k=top_k, weights_file=weights,
                          device=device, tta=tta, precision=precision)
