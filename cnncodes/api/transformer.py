"""scikit-learn's side: a transformer from image paths to codes, over a crash-safe cache.

``Pipeline(memory=...)`` caches a step's output keyed by its input arrays; cross-validation then
recomputes whenever a fold's rows differ. Here the cache is keyed by each photo (its path, stat and
content key) and the extractor's fingerprint, so every fold, grid point and later run reads the
codes a photo already has and the network runs once per photo, ever.
"""
import os
from dataclasses import replace
import tempfile
import time

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .rows import cache_generation, cache_index


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
        wanted = sorted(set(paths))
        extracted = False
        for _ in range(100):  # another writer may commit between the lookup and the read: look again
            index = cache_index(self.cache)
            self._check_fingerprint(index)
            held = index.rows_for(wanted) if index is not None else {}
            missing = [p for p in wanted if p not in held]
            if missing and not extracted:
                self._extract(missing)
                extracted = True  # what still misses failed to decode: _read says why
                continue
            codes = self._read(paths, held, index)
            if codes is not None:
                return codes
        raise RuntimeError(f"{self.cache}: changed under every read; is a writer committing in a loop?")

    def _check_fingerprint(self, index):
        """Codes already cached are read without running extract, so the cache's extractor is
        checked here: another backbone, layer set or weights is refused in one line, as extract does."""
        if index is None:
            return
        cached = index.fingerprint
        settings = (self.backbone, self.layer if isinstance(self.layer, (str, type(None))) else tuple(self.layer),
                    self.weights, self.crop_size, self.precision)
        if settings not in _FINGERPRINTS:
            from ..extract.config import CodeSpec, RunOptions, layer_names
            from ..extract.extractor import Extractor
            spec = CodeSpec(backbone=self.backbone, layers=layer_names(self.layer), weights=self.weights,
                            crop_size=self.crop_size)  # the precision decides no compared field but int8's ranges
            _FINGERPRINTS[settings] = Extractor.for_new_codes(spec, options=RunOptions(device="cpu")).fingerprint
        mine = _FINGERPRINTS[settings]
        if self.precision == "int8" and cached.quantization:  # its calibration is the cache's: extract adopts it
            mine = replace(mine, quantization=cached.quantization)
        mine.check_can_join(cached, self.cache)

    def _extract(self, paths):
        from .extract import extract_codes
        from ..cache.errors import CacheLocked
        with tempfile.TemporaryDirectory(prefix="cnncodes-transform-") as tmp:
            manifest = os.path.join(tmp, "images.csv")
            with open(manifest, "w", encoding="utf-8", newline="") as f:
                import csv
                writer = csv.writer(f)
                writer.writerow(["path"])  # no label column: labels the cache holds stay as they are
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

    def _read(self, paths, held, index):
        """The codes of ``paths`` in order, read from the version ``index`` describes; None when the
        cache is another version by now (its rows may have moved)."""
        from ..cache import open_cache
        from ..extract.config import layer_names
        missing = [p for p in paths if held.get(p) not in index.row_of]
        if missing:
            reason = index.failures.get(missing[0], "not in the cache")
            raise ValueError(f"{missing[0]}: {reason} ({len(missing)} of {len(paths)} images have no codes)")
        layer = "+".join(layer_names(self.layer)) if self.layer else index.code_layers
        rows = np.array([index.row_of[held[p]] for p in paths], dtype=np.int64)
        held_codes = index.codes.get(layer)
        if held_codes is not None:
            return held_codes[rows]
        with open_cache(self.cache) as c:
            if cache_generation(self.cache) != index.generation:
                return None
            if index.n_rows * c.width(layer) * 4 <= HELD_BYTES:  # small: read once, then every fold is a copy
                index.codes[layer] = c.codes(layer)
                return index.codes[layer][rows]
            mask = np.zeros(index.n_rows, dtype=bool)
            mask[rows] = True
            codes = c.codes(layer, rows=mask)  # in cache order
        return codes[np.searchsorted(np.flatnonzero(mask), rows)]


# A version's codes held in memory (per layer) up to this size: cross-validation and a grid search
# read the same rows a few dozen times; a larger cache is read row by row each time instead.
HELD_BYTES = 256 << 20


_FINGERPRINTS = {}  # (backbone, layer, weights, crop) -> the fingerprint extract would write


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
