"""Stage two's input: a cache's codes loaded once (CodesData), held or streamed within a memory
budget, and the rows an audit says to leave out."""
from dataclasses import dataclass, field, replace

import numpy as np

from ..cache import open_cache
from ..cache.schema import UNLABELED

from .errors import ClassifyError
from .splits import EXCLUDED_SPLIT, LEFT_OUT, UNLABELED_SPLIT, reported_split


@dataclass
class CodesData:
    """Everything stage two needs from a cache, loaded once.

    Codes held in memory are ``X``; codes over the memory budget are ``streamed``, and then reach a
    classifier only through ``codes_of(mask)`` (StreamedRows) or ``in_memory()`` (the seeded
    subsample that fits): ``X`` refuses, rather than being None."""
    _X: np.ndarray         # float32 [N, D] (as stored, float16, where read with stored=True), or None when streamed
    y: np.ndarray          # int [N]
    splits: np.ndarray     # str [N]
    class_names: list
    layer: str
    fingerprint: object    # cache.Fingerprint
    path: str
    rows: np.ndarray = None  # each row's index in the cache (None: all rows, in order)
    rows_total: int = None  # rows in the cache (more than len(X) when a memory budget subsampled them)
    views: np.ndarray = None  # uint8 [N]: 0 a centre view, 1..K an augmented view of the image before it
    stream: object = None   # a CodeStream when the codes exceed the budget (y/splits still cover every row)
    seed: int = 0           # the subsample's seed (budget exceeded)
    side_by_side: list = None  # other caches' codes appended as columns (classify/joined.py): cache, layer, fingerprint
    _subsample: "CodesData" = None
    _unlabeled: "CodesData" = None  # the rows without a label, when labelled() set them apart
    notes: list = field(default_factory=list)  # what loading decided (a subsample, rows left out), for people

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        parts = [f"{len(self):,} rows x {self.width}-d", f"layer {self.layer}",
                 f"{len(self.class_names)} class{'es' if len(self.class_names) != 1 else ''}"]
        if self.streamed:
            parts.append("streamed")
        if self._unlabeled is not None and len(self._unlabeled):
            parts.append(f"{len(self._unlabeled):,} unlabeled apart (.unlabeled)")
        return f"CodesData({self.path}: {', '.join(parts)})"

    @property
    def width(self) -> int:
        return int(self.stream.width if self.streamed else self.X.shape[1])

    @property
    def X(self) -> np.ndarray:
        """The codes, float32 [N, D], when held in memory (as stored where read with stored=True)."""
        if self._X is None:
            raise ClassifyError(f"{self.path}: these codes exceed the memory budget and are streamed; take "
                                ".in_memory().X (the seeded subsample that fits) or .codes_of(mask) (every row, "
                                "a load at a time), or load them with a larger max_memory")
        return self._X

    @property
    def streamed(self) -> bool:
        """Whether the codes are read from the cache a load at a time (over the memory budget)."""
        return self._X is None

    @property
    def n_unlabeled(self) -> int:
        """Rows without a label (here, or set apart by ``labelled()``): never fitted on nor reported."""
        apart = 0 if self._unlabeled is None else len(self._unlabeled)
        return int(np.count_nonzero(self.splits == UNLABELED_SPLIT)) + apart

    @property
    def unlabeled(self) -> "CodesData":
        """The rows without a label, as CodesData (their ``y`` is -1 throughout, scikit-learn's mark
        of an unlabeled sample): what `select` picks from and a semi-supervised learner takes."""
        if self._unlabeled is not None:
            return self._unlabeled
        return self._take(self.splits == UNLABELED_SPLIT, unlabeled=True)

    def labelled(self) -> "CodesData":
        """These codes with the unlabeled rows set apart (in ``.unlabeled``): ``X``, ``y``, ``splits``
        and ``paths`` then cover labelled rows only, and ``y`` holds class indices, nothing else."""
        if self._unlabeled is not None:
            return self
        apart = self.splits == UNLABELED_SPLIT
        if not apart.any():
            return replace(self, _unlabeled=self._take(apart, unlabeled=True))
        return replace(self._take(~apart), _unlabeled=self._take(apart, unlabeled=True))

    def _take(self, keep, unlabeled=False) -> "CodesData":
        """The rows in the boolean mask ``keep`` (positions of this data), in order."""
        positions = np.flatnonzero(keep)
        y = np.full(len(positions), -1, dtype=self.y.dtype) if unlabeled else self.y[positions]
        return replace(self, _X=None if self.streamed else self.X[positions], y=y, splits=self.splits[positions],
                       rows=self.cache_rows(positions), views=None if self.views is None else self.views[positions],
                       rows_total=len(positions), _subsample=None, _unlabeled=None)

    @property
    def excluded(self) -> int:
        """Rows dropped by exclude_rows (--exclude)."""
        return int(np.count_nonzero(self.splits == EXCLUDED_SPLIT))

    def in_memory_rows(self) -> int:
        """Rows that ``in_memory()`` holds."""
        from .budget import rows_that_fit
        return len(self.y) if not self.streamed else rows_that_fit(len(self.y), self.stream.width, self.stream.budget)

    def in_memory(self) -> "CodesData":
        """These codes held in memory: themselves, or (budget exceeded) the seeded random subsample
        of rows that fits, read once and kept for the next classifier."""
        if not self.streamed:
            return self
        if self._subsample is None:
            from .budget import subsample_mask
            keep = subsample_mask(len(self.y), self.in_memory_rows(), self.seed, self.views)
            with open_cache(self.path) as c:
                X = c.codes(self.layer, rows=self._cache_mask(keep))
            self._subsample = CodesData(X, self.y[keep], self.splits[keep], self.class_names, self.layer,
                                        self.fingerprint, self.path, self.cache_rows(np.flatnonzero(keep)),
                                        rows_total=len(self.y),
                                        views=None if self.views is None else self.views[keep])
        return self._subsample

    def codes_of(self, mask):
        """The codes of the rows in ``mask``: an array, or StreamedRows when they are streamed."""
        if not self.streamed:
            return self.X[mask]
        from .stream import StreamedRows
        return StreamedRows(self.stream, self._cache_mask(np.asarray(mask, dtype=bool)))

    def _cache_mask(self, mask) -> np.ndarray:
        """A boolean mask over these rows as one over the cache's rows (they are a subset in order)."""
        if self.rows is None:
            return mask
        full = np.zeros(self.stream.n_rows, dtype=bool)  # only streamed codes are read by cache row
        full[self.rows[mask]] = True
        return full

    @property
    def paths(self) -> list:
        """Each row's path in the cache (read from it on each call: paths are not held in memory)."""
        with open_cache(self.path) as c:
            return c.paths_of(self.cache_rows(np.arange(len(self.y))))

    def to_pandas(self):
        """A DataFrame, one row per code row: path, label (class name, None when unlabeled), split,
        and codes (a float32 array per row; None where the codes are streamed, not held)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas needs pandas: pip install pandas") from None
        labels = [self.class_names[i] if i >= 0 else None for i in self.y.tolist()]
        codes = [None] * len(self.y) if self.streamed else list(self.X)
        return pd.DataFrame({"path": self.paths, "label": labels, "split": self.splits, "codes": codes})

    def cache_rows(self, positions) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        return positions if self.rows is None else self.rows[positions]


def read_codes(cache_path, layer=None, max_memory=None, seed=0, stored=False) -> CodesData:
    """The cache's codes as float32, when they fit in ``max_memory`` bytes (None: no limit).
    stored: as the cache stores them instead (float16 for most: what the audit reads, converting a
    block or a gathered sample at a time where it computes; the budget still counts float32's bytes).
    layer: one layer, or several ("a,b" or "a+b"), concatenated; default every layer the cache holds.
    Beyond it, no codes are read here: ``stream`` reads them a load at a time for the heads that
    stream (logreg, linear), and ``in_memory()`` gives the others a seeded random subsample that fits."""
    from ..extract.config import layer_names
    from .budget import rows_that_fit
    from .stream import CodeStream
    with open_cache(cache_path) as c:
        layers = layer_names(layer) or code_layers(c.layers, c.fingerprint)
        layer = "+".join(layers)  # the codes' name, as a cache and a model file write it
        n, width = len(c), c.width(layer)
        labels, splits, views = c.labels, c.splits.astype(str), c.views
        splits = np.where(labels == UNLABELED, UNLABELED_SPLIT, splits)  # never reported, never trained on
        if max_memory is None or rows_that_fit(n, width, max_memory) == n:
            codes = c.codes(layer, dtype=None if stored else np.float32)
            return CodesData(codes, labels, splits, c.class_names, layer, c.fingerprint, c.path, rows_total=n,
                             views=views)
        meta = (c.class_names, layer, c.fingerprint, c.path)
    return CodesData(None, labels, splits, *meta, rows_total=n, views=views,
                     stream=CodeStream(cache_path, layer, max_memory), seed=seed)


def code_layers(layers, fingerprint) -> tuple:
    """Every cached layer of codes, to go side by side; a cache of maps alone: its first map."""
    codes = tuple(name for name in layers if name not in fingerprint.map_shapes)
    return codes or tuple(layers[:1])


def all_code_layers(layers, fingerprint) -> str:
    """code_layers' name, "a+b", as a cache and a model file write it."""
    return "+".join(code_layers(layers, fingerprint))


def read_exclusions(path) -> list:
    """Paths to leave out: an audit's JSON (its "exclude" list) or a text file, one path a line."""
    import json
    import os
    if not os.path.isfile(path):
        raise ClassifyError(f"exclude={path}: no such file; give an audit's audit.json or a list of paths")
    with open(path) as f:
        text = f.read()
    if text.lstrip().startswith("{"):
        try:
            return list(json.loads(text)["exclude"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ClassifyError(f"exclude={path}: a JSON file needs an \"exclude\" list of paths ({exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def exclude_rows(data: "CodesData", paths, reported=False) -> "CodesData":
    """These paths' rows (their views too) neither train nor choose hyper-parameters; with
    ``reported`` they leave the reported split as well. Returns a CodesData whose ``excluded``
    says how many rows went."""
    drop = np.isin(np.asarray(data.paths, dtype=object), np.asarray(list(paths), dtype=object))
    eval_split = reported_split(data.splits[~np.isin(data.splits, LEFT_OUT)])
    if not reported:
        drop &= data.splits != eval_split
    splits = np.where(drop, EXCLUDED_SPLIT, data.splits)
    return replace(data, splits=splits, _subsample=None)
