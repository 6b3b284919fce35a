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
        self._check_fingerprint()
        held = cached_rows_for(self.cache, wanted)
        missing = [p for p in wanted if p not in held]
        if missing:
            self._extract(missing)
            held.update(cached_rows_for(self.cache, missing))
        return self._read(paths, held)

    def _check_fingerprint(self):
        """Codes already cached are read without running extract, so the cache's extractor is
        checked here: another backbone, layer set or weights is refused in one line, as extract does."""
        from ..cache import existing_fingerprint
        cached = existing_fingerprint(self.cache) if os.path.exists(self.cache) else None
        if cached is None:
            return
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

    def _read(self, paths, held) -> np.ndarray:
        from ..cache import open_cache
        from ..classify.data import all_code_layers
        from ..extract.config import layer_names
        with open_cache(self.cache) as c:
            at = {p: i for i, (p, view) in enumerate(zip(c.paths, c.views)) if view == 0}
            failed = dict(c.failures)
            missing = [p for p in paths if held.get(p) not in at]
            if missing:
                reason = failed.get(missing[0], "not in the cache")
                raise ValueError(f"{missing[0]}: {reason} ({len(missing)} of {len(paths)} images have no codes)")
            layer = "+".join(layer_names(self.layer)) if self.layer else all_code_layers(c.layers, c.fingerprint)
            rows = np.array([at[held[p]] for p in paths])
            mask = np.zeros(len(c), dtype=bool)
            mask[rows] = True
            codes = c.codes(layer, rows=mask)  # in cache order
        return codes[np.searchsorted(np.flatnonzero(mask), rows)]


_FINGERPRINTS = {}  # (backbone, layer, weights, crop) -> the fingerprint extract would write
_KEYS = {}  # (absolute path, stat) -> SHA-256 of its bytes: each photo is hashed once per process


def cached_rows_for(cache, paths) -> dict:
    """{absolute path: the cache path whose row holds its codes} for the photos the cache already
    has, whatever path a writer first gave them: the same path; the path relative to the data
    folder extract was given, when its stat is unchanged; else a row with the same content key (the
    SHA-256 of the bytes). Changed and unknown photos are left out: extract reads those."""
    from ..cache import open_cache
    from ..extract.sources import paths_folder, read_and_hash
    from ..extract.sources.records import Record, file_stat
    if not os.path.exists(cache):
        return {}
    with open_cache(cache) as c:
        centre = c.views == 0
        cached = [p for p, keep in zip(c.paths, centre) if keep]
        keys = [k for k, keep in zip(c.keys, centre) if keep]
        try:
            stats = [tuple(int(v) for v in s) for s in c.raw("stat")[()][centre]]
        except KeyError:  # a schema-1 cache keeps no stat: its photos are found by content alone
            stats = [None] * len(cached)
        root = paths_folder(c.fingerprint.provenance.get("data_root"))
    stat_of, key_of = dict(zip(cached, stats)), dict(zip(cached, keys))
    by_key = {}
    for path, key in zip(cached, keys):
        by_key.setdefault(key, path)
    found = {}
    for path in paths:
        try:
            stat = file_stat(os.stat(path))
        except OSError:
            continue  # extract records why
        if stat_of.get(path) == stat:
            found[path] = path
            continue
        relative = os.path.relpath(path, root).replace(os.sep, "/") if root and "://" not in root else None
        if relative is not None and stat_of.get(relative) == stat:
            found[path] = relative
            continue
        key = _KEYS.get((path, stat))
        if key is None:
            key = _KEYS[(path, stat)] = read_and_hash(Record(path=path, abspath=path, label=None))[1]
        if key in by_key:
            found[path] = path if key_of.get(path) == key else by_key[key]
    return found


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
