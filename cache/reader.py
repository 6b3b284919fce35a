"""Reading a cache back: the API stage two uses. Plain h5py can read the same file (see docs/cache-format.md)."""
import os
from typing import NamedTuple

import h5py
import numpy as np

from .errors import CacheError
from .fingerprint import Fingerprint
from ._integrity import check_tables, open_sealed
from ._manifest import check_segments_present, is_segmented, manifest_from_file, segment_folder
from ._reader_leases import reader_registration
from ._segments import check_segment_files
from .schema import (CLASS_NAMES, CODES_GROUP, FAILED_GROUP, LABELS, STAT, VIEW_DTYPE, VIEWS, as_text, read_attrs,
                     read_failures, read_strings, text,
                     UNLABELED)

READ_BLOCK_ROWS = 8192
SPLITS = ("train", "val", "test")
SPARSE_SPAN = 16  # read_rows_into: rows kept this far apart on average are read alone
MISSING_ROW = "MISSING ROW"  # how a path reads where its segment is not there (cache/_manifest.py)
MISSING_ROW_BYTES = MISSING_ROW.encode()


def missing_rows(name, data) -> int:
    """How many rows of ``data`` (rows of the per-row dataset ``name``) read as a virtual dataset's
    fill value, which no real row holds: a segment HDF5 could not open behind the cache file."""
    data = np.asarray(data)
    if not data.size:
        return 0
    if name == LABELS:
        return int((data == -1).sum())
    if name == VIEWS:
        return int((data == np.iinfo(VIEW_DTYPE).max).sum())
    if name == STAT:
        return int((data.reshape(len(data), -1) == -1).all(axis=1).sum())
    if name == "keys":
        return int((data == b"").sum()) if data.dtype.kind == "S" else sum(not k for k in data.tolist())
    if name == "splits":  # a compare per known split: no conversion or sort of a million strings
        data = data if data.dtype.kind == "S" else as_text(data)
        known = np.zeros(data.shape, dtype=bool)
        for split in SPLITS:
            known |= data == (split.encode() if data.dtype.kind == "S" else split)
        return int((~known).sum())
    if name == "paths":  # compared as stored (bytes, or str): no decoding of a million paths
        return sum(p.startswith(MISSING_ROW_BYTES) if isinstance(p, bytes) else text(p).startswith(MISSING_ROW)
                   for p in data.tolist())
    if name.startswith(f"{CODES_GROUP}/"):
        if data.dtype == np.float16:  # NaN's bits (all exponent bits and a mantissa): numpy's isnan on
            nan = (data.view(np.uint16) & 0x7FFF) > 0x7C00  # float16 is ~10x slower than this test
        elif data.dtype.kind == "f":
            nan = np.isnan(data)
        else:
            return 0
        return int(nan.any(axis=tuple(range(1, data.ndim))).sum())
    return 0


class CheckedRows:
    """A per-row dataset of an open cache (``CodesCache.raw``) whose reads are checked: a damaged
    chunk or a row that reads as a fill value is one CacheError, never data. Everything else (shape,
    dtype, attrs, len) is the h5py dataset's."""

    def __init__(self, cache, name):
        self._cache, self._name = cache, name
        self._dset = cache._file[name]

    def __getattr__(self, attr):
        return getattr(self._dset, attr)

    def __len__(self):
        return len(self._dset)

    def __getitem__(self, key):
        cache = self._cache
        try:
            data = self._dset[key]
        except Exception as exc:  # noqa: BLE001  (HDF5 names damage in many ways)
            raise CacheError(f"{cache.path}: /{self._name} cannot be read ({exc}); run `cnncodes verify "
                             f"{cache.path}`") from None
        rows = data if np.ndim(data) == len(self._dset.shape) else np.asarray(data)[None]  # one row read alone
        if missing_rows(self._name, rows):
            raise CacheError(f"{cache.path}: /{self._name} has rows that read as missing (a segment file that "
                             f"cannot be opened); run `cnncodes verify {cache.path}`")
        return data


class CodesCache:
    """A read-only view of one cache file.

    Labels and splits are loaded on open (small arrays); paths, keys and codes on demand, so
    opening a cache of a million rows costs a few megabytes, not a Python object per row.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._file = None
        self._registration = None
        if not os.path.exists(self.path):
            raise CacheError(f"{self.path}: no such cache; create it with `cnncodes extract DATA --cache {self.path}`")
        # Registered before the file is opened, so no writer deletes a segment this version names.
        self._registration = reader_registration(self.path)
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self):
        try:
            self._file = open_sealed(self.path)  # its seal checked before HDF5 reads a byte of it
        except FileNotFoundError:
            raise CacheError(f"{self.path}: no such cache; create it with `cnncodes extract DATA --cache {self.path}`") \
                from None
        except CacheError:
            raise
        except OSError as exc:
            raise CacheError(f"{self.path}: not a readable HDF5 cache ({exc}); re-run extract into a new cache=") from None
        f = self._file
        try:
            if CODES_GROUP not in f or LABELS not in f:
                raise CacheError(f"{self.path}: HDF5 file without /codes and /labels, not a cnncodes cache; "
                                 "re-run extract into a new cache=")
            self.segmented = is_segmented(f)
            self._manifest = None
            if self.segmented:
                manifest = self._manifest = manifest_from_file(f)
                check_segments_present(self.path, manifest)
                check_segment_files(self.path, manifest)  # each one the cache file lists, and whole
            else:
                check_tables(f, self.path, "cache file")  # a packed file's attributes, class names, failures
            self.attrs = read_attrs(f)  # the file's raw attributes
            self.fingerprint = Fingerprint.from_attrs(self.attrs)  # the typed extractor identity
            self.class_names = read_strings(f[CLASS_NAMES])
            self.labels = self.raw(LABELS)[()].astype(np.int64)
            self.splits = as_text(self.raw("splits")[()])
            # 0: an image's centre view; 1..K: its augmented views (extract --views), same path
            self.views = self.raw(VIEWS)[()] if VIEWS in f else np.zeros(len(self.labels), dtype=VIEW_DTYPE)
            self.layers = list(f[CODES_GROUP].keys())
            self.failures = [(p, reason) for p, _, reason, _ in read_failures(f[FAILED_GROUP])]
            if len(self.labels) and (self.labels.max() >= len(self.class_names) or self.labels.min() < UNLABELED):
                raise CacheError(f"{self.path}: labels outside the {len(self.class_names)} class names; run "
                                 f"`cnncodes verify {self.path}`")
            if len(self.splits) != len(self.labels) or len(self.views) != len(self.labels):
                raise CacheError(f"{self.path}: /labels, /splits and /views differ in length; run `cnncodes verify "
                                 f"{self.path}`")
        except CacheError:
            raise
        except Exception as exc:  # noqa: BLE001  (HDF5 and h5py name damage in many ways)
            raise CacheError(f"{self.path}: damaged cache ({exc}); run `cnncodes verify {self.path}` "
                             "or re-extract into a new cache=") from None

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
        if self._registration is not None:
            os.close(self._registration)  # releases the reader's shared lock
            self._registration = None

    @property
    def paths(self) -> list:
        return [text(p) for p in self.raw("paths")[()]]

    def paths_of(self, rows) -> list:
        """The paths of some rows (indices, any order), reading only those."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return []
        order = np.argsort(rows)
        picked = self.raw("paths")[rows[order]]  # h5py reads increasing indices
        out = [None] * len(rows)
        for position, value in zip(order, picked):
            out[position] = text(value)
        return out

    @property
    def keys(self) -> list:
        return as_text(self.raw("keys")[()]).tolist()

    @property
    def first_layer(self) -> str:
        """The cache's first layer (as the fingerprint lists them): what readers take by default."""
        layers = self.fingerprint.layers or self.layers
        return layers[0]

    def width(self, layer=None) -> int:
        return sum(int(d.shape[1]) for d in self.datasets(layer))

    def datasets(self, layer=None) -> list:
        """The h5py datasets of ``layer``: one name, or several joined by '+' (their codes are
        concatenated, in that order, by codes())."""
        names = layer.split("+") if isinstance(layer, str) else list(layer or [None])
        return [self._dataset(name) for name in names]

    def split_mask(self, splits=None) -> np.ndarray:
        """Boolean [N] mask of rows whose split is in ``splits`` (all rows for None)."""
        if splits is None:
            return np.ones(len(self), dtype=bool)
        if isinstance(splits, str):
            splits = [splits]
        return np.isin(self.splits, list(splits))

    def split_counts(self, rows=None) -> dict:
        """Rows per split, among the boolean mask ``rows`` (all rows for None)."""
        names, counts = np.unique(self.splits if rows is None else self.splits[rows], return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts)}

    def codes(self, layer=None, splits=None, rows=None, dtype=np.float32) -> np.ndarray:
        """Codes of ``layer`` as ``dtype`` [n, D] (None: as stored, float16 for most caches: half
        float32's memory, and read 3-4x faster, with no conversion), for the rows in ``splits`` (all
        rows for None) and, if given, in the boolean mask ``rows``. Read in blocks: memory is the
        result's size. ``layer``: one layer, or several joined by '+' (concatenated)."""
        dsets = self.datasets(layer)
        mask = self.split_mask(splits)
        if rows is not None:
            mask = mask & np.asarray(rows, dtype=bool)
        if dtype is None:
            stored = np.result_type(*(d.dtype for d in dsets))
            dtype = stored if np.issubdtype(stored, np.floating) else np.float32
        out = np.empty((int(mask.sum()), sum(d.shape[1] for d in dsets)), dtype=dtype)
        filled = 0
        for start in range(0, len(mask), READ_BLOCK_ROWS):
            block_mask = mask[start:start + READ_BLOCK_ROWS]
            if not block_mask.any():
                continue
            filled += self.read_rows_into(out, filled, dsets, start, block_mask)
        return out

    def read_rows_into(self, out, at, dsets, start, keep, copy=np.copyto) -> int:
        """The rows ``start + i`` for which ``keep[i]``, of each dataset side by side, into
        ``out[at:]`` (converted by ``copy(destination, source)``); returns how many rows."""
        n, column = int(keep.sum()), 0
        picked = np.flatnonzero(keep)
        # a few rows of a long block (a query's row): read from the first kept row to the last, or
        # those rows alone where they lie far apart, never the whole block
        lo, hi = (int(picked[0]), int(picked[-1]) + 1) if n else (0, 0)
        alone = n and hi - lo > SPARSE_SPAN * n
        for dset in dsets:
            width = dset.shape[1]
            if alone:
                block = self.read_rows(dset, start + picked)
            else:
                block = self.read_rows(dset, start + lo, start + hi)
                if n != hi - lo:
                    block = block[picked - lo]
            copy(out[at:at + n, column:column + width], block)
            column += width
        return n

    def read_rows(self, dset, start, stop=None) -> np.ndarray:
        """Rows [start, stop) of a codes dataset as stored (float16 or float32), or with ``stop``
        None the rows listed in ``start`` (increasing); a damaged chunk is one clear error naming
        the rows and the fix."""
        selection = slice(start, stop)
        if stop is None:
            selection = np.asarray(start, dtype=np.int64)
            start, stop = int(selection[0]), int(selection[-1]) + 1
        try:
            block = dset[selection]
        except Exception as exc:  # noqa: BLE001  (a failed checksum, or HDF5 naming damage otherwise)
            raise CacheError(f"{self.path}: codes of rows {start}-{stop - 1} cannot be read "
                             f"({exc}); run `cnncodes verify {self.path}`") from None
        if missing_rows(f"{CODES_GROUP}/", block):  # NaN: the fill of a row whose segment HDF5 could not open
            raise CacheError(f"{self.path}: codes of rows {start}-{stop - 1} read as missing (NaN); run "
                             f"`cnncodes verify {self.path}`")
        return block

    def labels_of(self, splits=None) -> np.ndarray:
        return self.labels[self.split_mask(splits)]

    def row_runs(self):
        """The rows as runs of the cache's segment files, in row order: [SegmentRun(file, content,
        start, stop)], the rows start..stop of ``file`` being the next stop - start rows of the cache;
        None for a packed cache (one file, no segments). A segment file never changes once written and
        ``content`` names what it holds (its SHA-256 digest; name, size and mtime for older segments),
        so what a reader derives from a segment's rows (a hash of each, an index) can be kept under
        ``content`` and reused by every later version of the cache: work in proportion to new rows."""
        if self._manifest is None:
            return None
        folder = segment_folder(self.path)
        contents = {}
        for name in self._manifest.segments:
            digest = self._manifest.digests.get(name)
            if not digest:
                info = os.stat(os.path.join(folder, name))
                digest = f"{name}-{info.st_size}-{info.st_mtime_ns}"
            contents[name] = digest
        return [SegmentRun(os.path.join(folder, name), contents[name], start, stop)
                for name, start, stop in self._manifest.ranges]

    def dataset(self, layer=None):
        """The h5py dataset of one layer's codes (for streaming reads)."""
        return self._dataset(layer)

    def raw(self, name):
        """A per-row dataset by name (paths, keys, splits, stat), for streaming reads: h5py's, with each
        read checked (CheckedRows); a group (failed) as h5py's."""
        if isinstance(self._file[name], h5py.Group):
            return self._file[name]
        return CheckedRows(self, name)

    def _dataset(self, layer):
        layer = layer or self.first_layer
        if layer not in self._file[CODES_GROUP]:
            raise CacheError(f"{self.path}: no layer {layer!r}; this cache has {self.layers}")
        return self._file[CODES_GROUP][layer]

    def size_bytes(self) -> int:
        """The cache file plus its segment files."""
        total = os.path.getsize(self.path)
        folder = segment_folder(self.path)
        if self.segmented and os.path.isdir(folder):
            total += sum(e.stat().st_size for e in os.scandir(folder) if e.name.endswith(".h5"))
        return total

    def summary(self) -> dict:
        """What `cnncodes info` prints: counts, classes, splits, fingerprint, failures."""
        centre = self.views == 0  # images, counted once however many augmented views they have
        labelled = centre & (self.labels >= 0)
        counts = np.bincount(self.labels[labelled], minlength=len(self.class_names)) if labelled.any() else \
            np.zeros(len(self.class_names), dtype=np.int64)
        return {
            "path": self.path,
            "rows": len(self),
            "images": int(centre.sum()),
            "view_rows": int(len(self) - centre.sum()),
            "layers": {layer: self.width(layer) for layer in self.layers},
            "classes": {name: int(counts[i]) for i, name in enumerate(self.class_names)},
            "unlabeled": int((centre & (self.labels == UNLABELED)).sum()),
            "splits": self.split_counts(centre),
            "failed": len(self.failures),
            "failures": [{"path": p, "reason": r} for p, r in self.failures],
            "vanished": self.attrs.get("vanished_rows"),
            "fingerprint": self.attrs,
            "size_bytes": self.size_bytes(),
            "how_to_copy": self.how_to_copy(),
        }

    def how_to_copy(self) -> str:
        """One line: what must travel with this file."""
        if not self.segmented:
            return "this one file is self-contained"
        folder = os.path.basename(segment_folder(self.path))
        return (f"copy {os.path.basename(self.path)} together with its folder {folder}/ (the rows live there), or "
                f"make one self-contained file: cnncodes pack {self.path} --out FILE.h5")


class SegmentRun(NamedTuple):
    """Rows start..stop of one segment file (CodesCache.row_runs)."""
    file: str
    content: str
    start: int
    stop: int


def segment_row_names(segment_file) -> tuple:
    """(paths [str], content keys str array, views array) of every row of one segment file, each
    chunk's checksum checked: what names a row (CodesCache.row_runs)."""
    from ._segments import open_segment, _views
    with open_segment(segment_file) as f:
        rows = int(f.attrs["rows"])
        return [text(p) for p in f["paths"][()]], as_text(f["keys"][()]), _views(f, rows)


def open_cache(path) -> CodesCache:
    return CodesCache(path)
