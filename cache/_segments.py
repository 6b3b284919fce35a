"""Segment files: immutable HDF5 files holding a block of rows, written once and never changed.

A segment is written under a temporary name and renamed when complete, so a segment file that
exists under its final name is whole. The cache file's virtual datasets stitch segments together.
"""
import contextlib
import os
import re
from dataclasses import dataclass, field

import h5py
import numpy as np

from ._files import new_hdf5
from ._integrity import (ROWS_DIGEST, check_tables, damaged, fixed_utf8, row_options, stamp, stored_digest,
                         write_fixed_attrs)
from .errors import CacheError
from .schema import (CLASS_NAMES, CODE_CHUNK_ROWS, CODES_GROUP, FAILED_FIELDS, FAILED_GROUP, KEY_DTYPE, LABELS,
                     SPLIT_DTYPE, STAT, STAT_COLUMNS, VIEW_DTYPE, VIEWS, read_attrs, read_failures, read_strings, text,
                     UNLABELED, class_of)

SEGMENT_NAME = re.compile(r"^seg-(\d{8})\.h5$")
MOVED_FROM = "moved_from"  # a shard's optional list of paths its rows replace
SHARD = "shard"    # rows and failures written by an extract run: new work
MERGED = "merged"  # live rows of adjacent segments copied into one: nothing new


def segment_name(seq: int) -> str:
    return f"seg-{seq:08d}.h5"


def segment_seq(name: str):
    match = SEGMENT_NAME.match(name)
    return int(match.group(1)) if match else None


@dataclass
class SegmentRows:
    """Rows of one segment as lists or arrays, one entry per row."""
    paths: list = field(default_factory=list)
    keys: list = field(default_factory=list)     # hex strings
    splits: list = field(default_factory=list)
    classes: list = field(default_factory=list)  # class name per row
    stats: list = field(default_factory=list)    # (size, mtime_ns, inode) per row
    views: list = field(default_factory=list)    # view index per row: 0 the centre view, 1..K augmented views
    codes: dict = field(default_factory=dict)    # layer -> list of [n, D] arrays
    failed_paths: list = field(default_factory=list)
    failed_keys: list = field(default_factory=list)
    failed_reasons: list = field(default_factory=list)
    failed_stats: list = field(default_factory=list)
    # paths whose rows these rows replace under a new path (a photo found moved or renamed): the
    # link cuts them in the same publish, so a kill never leaves both
    moved_from: list = field(default_factory=list)

    def __len__(self):
        return len(self.paths) + len(self.failed_paths)

    def extend_rows(self, other: "SegmentRows") -> None:
        """Append ``other``'s rows (not its failures) after these."""
        for name in ("paths", "keys", "splits", "classes", "stats", "views"):
            getattr(self, name).extend(getattr(other, name))
        for layer, parts in other.codes.items():
            self.codes.setdefault(layer, []).extend(parts)


def write_segment(path, attrs: dict, class_names, rows: SegmentRows, widths: dict, dtype) -> str:
    """Write ``rows`` to ``path`` atomically (temporary name, fsync, rename); returns its digest
    (cache/_integrity.py), which the cache file lists beside its name."""
    n = len(rows.paths)
    with new_hdf5(path) as f:
        # Nothing here is a variable-length string: HDF5 keeps those in a heap with no checksum, which it
        # may never finish reading once damaged (cache/_integrity.py). Every per-row dataset carries
        # fletcher32 checksums, as the codes do.
        write_fixed_attrs(f, attrs)
        f.attrs["rows"] = n
        f.create_dataset(CLASS_NAMES, data=fixed_utf8(class_names))
        index = {name: i for i, name in enumerate(class_names)}
        labels = np.array([UNLABELED if c is None else index[c] for c in rows.classes], dtype=np.int32).reshape(n)
        f.create_dataset(LABELS, data=labels, **row_options(n))
        f.create_dataset("paths", data=fixed_utf8(rows.paths), **row_options(n, compress=True))
        f.create_dataset("keys", data=np.array(rows.keys, dtype=KEY_DTYPE).reshape(n), **row_options(n))
        f.create_dataset("splits", data=np.array(rows.splits, dtype=SPLIT_DTYPE).reshape(n), **row_options(n))
        stat = f.create_dataset(STAT, data=np.asarray(rows.stats, dtype=np.int64).reshape(n, len(STAT_COLUMNS)),
                                **row_options(n, (len(STAT_COLUMNS),)))
        stat.attrs["columns"] = fixed_utf8(STAT_COLUMNS)
        if attrs.get("views"):  # caches with augmented views only: a view row follows its centre row
            f.create_dataset(VIEWS, data=np.asarray(rows.views, dtype=VIEW_DTYPE).reshape(n), **row_options(n))
        group = f.create_group(CODES_GROUP)
        for layer, width in widths.items():
            parts = rows.codes.get(layer) or [np.zeros((0, width), dtype)]
            data = np.concatenate([np.asarray(p, dtype=dtype) for p in parts]).reshape(n, width)
            # fletcher32: a checksum per chunk, so bytes that change on disk fail loudly on read.
            group.create_dataset(layer, data=data, chunks=(max(1, min(CODE_CHUNK_ROWS, n)), width),
                                 maxshape=(None, width), fletcher32=True)
        failed = f.create_group(FAILED_GROUP)
        for name in FAILED_FIELDS:
            failed.create_dataset(name, data=fixed_utf8(getattr(rows, f"failed_{name}")))
        failed.create_dataset(STAT, data=np.asarray(rows.failed_stats, dtype=np.int64).reshape(-1, len(STAT_COLUMNS)))
        if rows.moved_from:  # optional: older segments have none
            f.create_dataset(MOVED_FROM, data=fixed_utf8(rows.moved_from))
        _, digest = stamp(f)
    return digest


_tables_checked = {}  # (path, inode, size, mtime): a segment whose tables this process checked (files never change)


@contextlib.contextmanager
def open_segment(path, check=True):
    """A segment file opened for reading, its small tables checked against their digest (once per
    process and file); any error reading it (a damaged file) is one CacheError naming it."""
    try:
        with h5py.File(path, "r") as f:
            if check:
                info = os.stat(path)
                seen = (os.path.abspath(path), info.st_ino, info.st_size, info.st_mtime_ns)
                if seen not in _tables_checked:
                    check_tables(f, path, "segment file")
                    if len(_tables_checked) > 4096:
                        _tables_checked.clear()
                    _tables_checked[seen] = True
            yield f
    except (CacheError, FileNotFoundError):
        raise
    except Exception as exc:  # noqa: BLE001  (HDF5 and h5py name damage in many ways)
        raise damaged(path, "segment file", exc) from None


def awaits_link(path, linked_through: int) -> bool:
    """For a segment file the cache file does not name: is it a shard a killed run committed but did
    not link (the next writer links it)? Otherwise it is retired: merged away, or a half-done merge."""
    with open_segment(path) as f:
        kind = f.attrs.get("kind", SHARD)
    kind = text(kind)
    return kind == SHARD and segment_seq(os.path.basename(path)) > linked_through


@dataclass
class SegmentIndex:
    """What the append API keeps in memory of one segment: enough to decide what to re-read."""
    name: str
    rows: int
    keys: np.ndarray     # S64 [rows]
    stats: np.ndarray    # int64 [rows, 3]
    labels: np.ndarray   # int32 [rows], into the segment's own class table
    splits: np.ndarray   # S5 [rows]
    class_names: list
    views: np.ndarray = None  # uint8 [rows]: 0 for a centre view (an image's first row)

    def span(self, local: int) -> int:
        """Rows of the image whose centre row is ``local``: itself and the views that follow it."""
        stop = local + 1
        while stop < self.rows and self.views[stop] != 0:
            stop += 1
        return stop - local


def read_segment_index(path, with_paths=True):
    """(SegmentIndex, paths or None, attrs): read whole, so each chunk's checksum is checked."""
    with open_segment(path) as f:
        attrs = read_attrs(f)
        rows = int(f.attrs["rows"])
        index = SegmentIndex(os.path.basename(path), rows, f["keys"][()], f[STAT][()],
                             f[LABELS][()], f["splits"][()], read_strings(f[CLASS_NAMES]), _views(f, rows))
        paths = read_strings(f["paths"]) if with_paths else None
        lengths = {len(index.keys), len(index.stats), len(index.labels), len(index.splits), len(index.views)}
        if lengths != {rows} or (paths is not None and len(paths) != rows):
            raise damaged(path, "segment file", f"its per-row datasets do not all hold {rows} rows")
    return index, paths, attrs


def read_segment_failures(path):
    """[(path, key, reason, stat)] that a shard recorded."""
    with open_segment(path) as f:
        return read_failures(f[FAILED_GROUP])


def read_segment_moved(path) -> list:
    """The paths whose rows a shard's rows replace (moved photos); [] for most shards."""
    with open_segment(path) as f:
        return read_strings(f[MOVED_FROM]) if MOVED_FROM in f else []


def read_segment_rows(path, selection, layers) -> SegmentRows:
    """The rows at ``selection`` (sorted local indices) as SegmentRows."""
    rows = SegmentRows()
    with open_segment(path) as f:
        names = read_strings(f[CLASS_NAMES])
        sel = np.asarray(selection, dtype=np.int64)
        if not len(sel):
            return rows
        lo, hi = int(sel[0]), int(sel[-1]) + 1
        local = sel - lo  # read one contiguous block, then pick: fast for the dense runs merges copy
        rows.paths = [text(p) for p in f["paths"][lo:hi][local]]
        rows.keys = [text(k) for k in f["keys"][lo:hi][local]]
        rows.splits = [text(s) for s in f["splits"][lo:hi][local]]
        rows.classes = class_of(f[LABELS][lo:hi][local], names)
        rows.stats = [tuple(int(v) for v in s) for s in f[STAT][lo:hi][local]]
        rows.views = _views(f, hi)[lo:hi][local].tolist()
        rows.codes = {layer: [f[CODES_GROUP][layer][lo:hi][local]] for layer in layers}
    return rows


def _views(f, rows) -> np.ndarray:
    """The view index of a segment's rows (all 0 where the cache has no augmented views)."""
    return f[VIEWS][()] if VIEWS in f else np.zeros(rows, dtype=VIEW_DTYPE)


def check_identity(path, digest, listed) -> None:
    """A segment file is the one the cache file lists (its digest): not another cache's, nor an older file."""
    if listed and (digest or "") != listed:
        raise damaged(path, "segment file", "it is not the file the cache file lists (its digest differs: another "
                      "cache's, or an older copy)")


def check_segment_files(cache_path, manifest) -> None:
    """Every segment the cache file lists opens, holds the rows it lists and is the very file it lists:
    what a reader checks before it reads a row (the cache file's virtual datasets open them lazily)."""
    folder = f"{os.fspath(cache_path)}.shards"
    for name, rows in manifest.segments.items():
        path = os.path.join(folder, name)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise damaged(path, "segment file", "it is missing") from None
        seen = (os.path.abspath(path), info.st_ino, info.st_size, info.st_mtime_ns, manifest.digests.get(name), rows)
        if seen in _identity_checked:  # this very file was checked by this process (segments never change)
            continue
        with open_segment(path, check=False) as f:  # readers read no segment's own tables
            digest, stored = stored_digest(f, ROWS_DIGEST), int(f.attrs.get("rows", -1))
        check_identity(path, digest, manifest.digests.get(name))
        if stored != rows:
            raise damaged(path, "segment file", f"it holds {stored} rows, the cache file lists {rows}")
        if len(_identity_checked) > 4096:
            _identity_checked.clear()
        _identity_checked[seen] = True


_identity_checked = {}
