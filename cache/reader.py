"""Reading a cache back: the API stage two uses. Plain h5py can read the same file (see README)."""
import os

import h5py
import numpy as np

from .errors import CacheError
from .schema import CLASS_NAMES, CODES_GROUP, FAILED_GROUP, LABELS, read_attrs, read_strings

READ_BLOCK_ROWS = 8192


class CodesCache:
    """A read-only view of one cache file.

    Index arrays (labels, splits, paths, keys) are loaded on open; codes are read on demand.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise CacheError(f"{self.path}: no such cache; create it with `python pipeline.py extract DATA --cache {self.path}`")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise CacheError(f"{self.path}: not a readable HDF5 cache ({exc}); re-run extract into a new --cache") from None
        f = self._file
        if CODES_GROUP not in f or LABELS not in f:
            self.close()
            raise CacheError(f"{self.path}: HDF5 file without /codes and /labels, not a cnncodes cache; "
                             "re-run extract into a new --cache")
        self.fingerprint = read_attrs(f)
        self.class_names = read_strings(f[CLASS_NAMES])
        self.labels = f[LABELS][()].astype(np.int64)
        self.splits = np.array(read_strings(f["splits"]), dtype=object)
        self.paths = read_strings(f["paths"])
        self.keys = read_strings(f["keys"])
        self.layers = list(f[CODES_GROUP].keys())
        failed = f[FAILED_GROUP]
        self.failures = list(zip(read_strings(failed["paths"]), read_strings(failed["reasons"])))

    def __len__(self):
        return len(self.labels)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def default_layer(self) -> str:
        layers = self.fingerprint.get("layers") or self.layers
        return layers[0]

    def width(self, layer=None) -> int:
        return int(self._dataset(layer).shape[1])

    def split_mask(self, splits=None) -> np.ndarray:
        """Boolean [N] mask of rows whose split is in ``splits`` (all rows for None)."""
        if splits is None:
            return np.ones(len(self), dtype=bool)
        if isinstance(splits, str):
            splits = [splits]
        return np.isin(self.splits, list(splits))

    def split_counts(self) -> dict:
        names, counts = np.unique(self.splits.astype(str), return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts)}

    def codes(self, layer=None, splits=None) -> np.ndarray:
        """Codes of ``layer`` as float32 [n, D], for the rows in ``splits`` (all rows for None)."""
        dset = self._dataset(layer)
        mask = self.split_mask(splits)
        out = np.empty((int(mask.sum()), dset.shape[1]), dtype=np.float32)
        filled = 0
        for start in range(0, len(mask), READ_BLOCK_ROWS):
            block_mask = mask[start:start + READ_BLOCK_ROWS]
            if not block_mask.any():
                continue
            block = dset[start:start + len(block_mask)][block_mask]
            out[filled:filled + len(block)] = block
            filled += len(block)
        return out

    def labels_of(self, splits=None) -> np.ndarray:
        return self.labels[self.split_mask(splits)]

    def _dataset(self, layer):
        layer = layer or self.default_layer
        if layer not in self._file[CODES_GROUP]:
            raise CacheError(f"{self.path}: no layer {layer!r}; this cache has {self.layers}")
        return self._file[CODES_GROUP][layer]

    def summary(self) -> dict:
        """What `pipeline.py info` prints: counts, classes, splits, fingerprint, failures."""
        per_class = {name: int((self.labels == i).sum()) for i, name in enumerate(self.class_names)}
        return {
            "path": self.path,
            "rows": len(self),
            "layers": {layer: self.width(layer) for layer in self.layers},
            "classes": per_class,
            "splits": self.split_counts(),
            "failed": len(self.failures),
            "failures": [{"path": p, "reason": r} for p, r in self.failures],
            "fingerprint": self.fingerprint,
            "size_bytes": os.path.getsize(self.path),
        }


def open_cache(path) -> CodesCache:
    return CodesCache(path)
