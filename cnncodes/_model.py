"""A fitted model as one object: the scikit-learn pipeline, what it was trained on, its result."""
import os

import numpy as np


class Model:
    """What ``cnncodes.fit`` returns and ``cnncodes.load_model`` reads back.

    .pipeline: the fitted scikit-learn Pipeline (scale, classifier), or an ensemble's soft vote.
    .result: the fit's result (accuracy and its interval, params, sweep, mistakes; None when loaded
    from a file written before results were kept). .class_names, .layer, .fingerprint: the codes
    it takes (the cache's extractor, so predict_images encodes new photos exactly as they were).
    """

    def __init__(self, pipeline, meta: dict, result: dict = None, path: str = None):
        from .cache.fingerprint import Fingerprint
        self.pipeline, self.meta, self.path = pipeline, meta, path
        self.result = result if result is not None else meta.get("result")
        self.classifier = meta["classifier"]
        self.class_names = list(meta["class_names"])
        self.layer = meta["layer"]
        fp = meta["fingerprint"]
        self.fingerprint = fp if isinstance(fp, Fingerprint) else Fingerprint.from_attrs(fp)
        self.side_by_side = [dict(part, fingerprint=part["fingerprint"] if isinstance(part["fingerprint"], Fingerprint)
                                  else Fingerprint.from_attrs(part["fingerprint"]))
                             for part in meta.get("side_by_side") or []]

    @classmethod
    def from_loaded(cls, loaded, path=None) -> "Model":
        return cls(loaded.pipeline, loaded.meta, path=path)

    @property
    def classes(self) -> np.ndarray:
        """Label indices into class_names, in predict_proba's column order."""
        return self.pipeline.classes_

    def predict_proba(self, X) -> np.ndarray:
        """X: codes [n, D] of this model's layer. Columns in ``classes`` order."""
        return self.pipeline.predict_proba(np.asarray(X, dtype=np.float32))

    def predict(self, X) -> list:
        """Class names for codes [n, D]."""
        return [self.class_names[int(i)] for i in self.pipeline.predict(np.asarray(X, dtype=np.float32))]

    def predict_images(self, images, *, top_k=3, weights=None, device="auto", tta=False, precision=None):
        """Classify image files or folders: the cache's extractor, then this model. Returns
        (predictions, failures) as cnncodes.predict does."""
        from ._api import predict
        return predict(self, images, top_k=top_k, weights=weights, device=device, tta=tta, precision=precision)

    def save(self, path) -> str:
        """One .npz file (plain arrays and JSON: loading it runs no code)."""
        from .classify.model_file import save_model
        save_model(os.fspath(path), self.pipeline, self.meta)
        return os.fspath(path)

    def export_onnx(self, path, *, weights=None) -> dict:
        """One ONNX file, image -> probabilities (what `cnncodes export-model` writes)."""
        from .classify.deploy.onnx_export import export_onnx
        return export_onnx(self, os.fspath(path), weights_file=weights)

    def __repr__(self):
        accuracy = f", accuracy {self.result['accuracy']:.4f}" if self.result and "accuracy" in self.result else ""
        return (f"Model({self.classifier} on {self.fingerprint.backbone} {self.layer}, "
                f"{len(self.class_names)} classes{accuracy})")
