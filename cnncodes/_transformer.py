"""scikit-learn's side: a transformer from image paths to codes, over a crash-safe cache.

``Pipeline(memory=...)`` caches a step's output keyed by its input arrays; cross-validation then
recomputes whenever a fold's rows differ. Here the cache is keyed by each photo (its path, stat and
content key) and the extractor's fingerprint, so every fold, grid point and later run reads the
codes a photo already has and the network runs once per photo, ever.
"""
import os
import tempfile
import time

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class CodesTransformer(TransformerMixin, BaseEstimator):
    """Image paths -> codes [n, D] (float32, input order), extracting only the photos ``cache`` lacks.

    X: a list or 1-d array of paths, or a one-column DataFrame (or 2-d array) of them. The photos
    go through ``backbone`` (with extract's options by name: ``layer``, ``weights``, ``precision``,
    ``crop_size``, ``batch_size``, ``workers``, ``device``) into the same HDF5 cache `extract`
    writes, as rows named by their absolute paths: a kill loses nothing committed, a changed file is
    re-read, and a cache of another backbone or weights is refused in one line.
    ``lock_wait``: seconds to wait while another process (a parallel fold) writes the cache.
    """

    def __init__(self, cache="codes.h5", backbone="vgg16", layer=None, weights=None, precision="auto",
                 crop_size=None, batch_size=None, workers=0, device="auto", lock_wait=600.0):
        self.cache = cache
        self.backbone = backbone
        self.layer = layer
        self.weights = weights
        self.precision = precision
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.workers = workers
        self.device = device
        self.lock_wait = lock_wait

    def fit(self, X, y=None):
        """Nothing to learn: the network is frozen. Checks X; the codes are made by transform."""
        self.n_features_in_ = 1
        _paths(X)
        return self

    def transform(self, X) -> np.ndarray:
        paths = _paths(X)
        self._extract(sorted(set(paths)))
        return self._read(paths)

    def _extract(self, paths):
        from ._api import extract_codes
        from .cache.errors import CacheLocked
        with tempfile.TemporaryDirectory(prefix="cnncodes-transform-") as tmp:
            manifest = os.path.join(tmp, "images.csv")
            with open(manifest, "w", encoding="utf-8", newline="") as f:
                import csv
                writer = csv.writer(f)
                writer.writerow(["path"])
                writer.writerows([p] for p in paths)
            waited_until = time.monotonic() + self.lock_wait
            while True:
                try:
                    self.last_summary_ = extract_codes(
                        manifest, self.cache, backbone=self.backbone, layer=self.layer, weights=self.weights,
                        precision=self.precision, crop_size=self.crop_size, batch_size=self.batch_size,
                        workers=self.workers, device=self.device)
                    return
                except CacheLocked:  # another fold is extracting: its photos will be ours too
                    if time.monotonic() > waited_until:
                        raise
                    time.sleep(0.5)

    def _read(self, paths) -> np.ndarray:
        from .cache import open_cache
        with open_cache(self.cache) as c:
            at = {p: i for i, (p, view) in enumerate(zip(c.paths, c.views)) if view == 0}
            failed = dict(c.failures)
            missing = [p for p in paths if p not in at]
            if missing:
                reason = failed.get(missing[0], "not in the cache")
                raise ValueError(f"{missing[0]}: {reason} ({len(missing)} of {len(paths)} images have no codes)")
            layer = self.layer.replace(",", "+") if self.layer else c.first_layer
            rows = np.array([at[p] for p in paths])
            mask = np.zeros(len(c), dtype=bool)
            mask[rows] = True
            codes = c.codes(layer, rows=mask)  # in cache order
        return codes[np.searchsorted(np.flatnonzero(mask), rows)]


def _paths(X) -> list:
    """Absolute paths from a list, a 1-d array, or a one-column DataFrame or 2-d array."""
    if hasattr(X, "to_numpy"):
        X = X.to_numpy()
    X = np.asarray(X, dtype=object)
    if X.ndim == 2 and X.shape[1] == 1:
        X = X[:, 0]
    if X.ndim != 1:
        raise ValueError(f"CodesTransformer takes image paths: a list, a 1-d array or one column, not shape {X.shape}")
    return [os.path.abspath(os.fspath(p)) for p in X]
