"""Segment files: immutable HDF5 files holding a block of rows, written once and never changed.

A segment is written under a temporary name and renamed when complete, so a segment file that
exists under its final name is whole. The cache file's virtual datasets stitch segments together.
"""
import contextlib
import os
import re
import threading
from dataclasses import dataclass, field

import h5py
import numpy as np

from ._chunks import MergedCodes, chunk_rows_of, plain_fletcher32_chunks, read_checked_chunk, write_codes
from ._files import new_hdf5
from ._integrity import (ROWS_DIGEST, check_tables, damaged, fixed_attr, fixed_utf8, row_options, stamp,
                         stored_digest)
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
    # a merge's rows come as arrays, read as stored (read_merge_rows): paths, keys and splits as bytes,
    # stats and views as arrays, and labels (int32, into the class table the segment is written with)
    # in place of ``classes``; None: the lists above (new rows, carried or moved ones)
    labels: np.ndarray = None

    def __len__(self):
        return len(self.paths) + len(self.failed_paths)

    def extend_rows(self, other: "SegmentRows") -> None:
        """Append ``other``'s rows (not its failures) after these."""
        for name in ("paths", "keys", "splits", "classes", "stats", "views"):
            getattr(self, name).extend(getattr(other, name))
        for layer, parts in other.codes.items():
            self.codes.setdefault(layer, []).extend(parts)

    def extend_failures(self, other: "SegmentRows") -> None:
        """Append ``other``'s failures after these."""
        for name in ("failed_paths", "failed_keys", "failed_reasons", "failed_stats"):
            getattr(self, name).extend(getattr(other, name))


def write_segment(path, attrs: dict, class_names, rows: SegmentRows, widths: dict, dtype) -> str:
    """Write ``rows`` to ``path`` atomically (temporary name, fsync, rename); returns its digest
    (cache/_integrity.py), which the cache file lists beside its name."""
    n = len(rows.paths)
    # the small tables as stored: written, and remembered, from these arrays
    stored_attrs = {key: fixed_attr(value) for key, value in attrs.items() if value is not None}
    stored_attrs["rows"] = n
    tables = {"attrs": stored_attrs, CLASS_NAMES: fixed_utf8(class_names),
              FAILED_GROUP: {name: fixed_utf8(getattr(rows, f"failed_{name}")) for name in FAILED_FIELDS}}
    tables[FAILED_GROUP][STAT] = np.asarray(rows.failed_stats, dtype=np.int64).reshape(-1, len(STAT_COLUMNS))
    if rows.moved_from:  # optional: older segments have none
        tables[MOVED_FROM] = fixed_utf8(rows.moved_from)
    with new_hdf5(path) as f:
        # Nothing here is a variable-length string: HDF5 keeps those in a heap with no checksum, which it
        # may never finish reading once damaged (cache/_integrity.py). Every per-row dataset carries
        # fletcher32 checksums, as the codes do.
        for key, value in stored_attrs.items():
            f.attrs[key] = value
        f.create_dataset(CLASS_NAMES, data=tables[CLASS_NAMES])
        if rows.labels is None:
            index = {name: i for i, name in enumerate(class_names)}
            labels = np.array([UNLABELED if c is None else index[c] for c in rows.classes], dtype=np.int32).reshape(n)
        else:
            labels = np.asarray(rows.labels, dtype=np.int32).reshape(n)
        # the per-row arrays as stored (the rows digest is computed from them, not read back)
        written = {LABELS: labels, "paths": _fixed_paths(rows.paths),
                   "keys": np.array(rows.keys, dtype=KEY_DTYPE).reshape(n),
                   "splits": np.array(rows.splits, dtype=SPLIT_DTYPE).reshape(n),
                   STAT: np.asarray(rows.stats, dtype=np.int64).reshape(n, len(STAT_COLUMNS))}
        f.create_dataset(LABELS, data=labels, **row_options(n))
        f.create_dataset("paths", data=written["paths"], **row_options(n, compress=True))
        f.create_dataset("keys", data=written["keys"], **row_options(n))
        f.create_dataset("splits", data=written["splits"], **row_options(n))
        stat = f.create_dataset(STAT, data=written[STAT], **row_options(n, (len(STAT_COLUMNS),)))
        stat.attrs["columns"] = fixed_utf8(STAT_COLUMNS)
        if attrs.get("views"):  # caches with augmented views only: a view row follows its centre row
            written[VIEWS] = np.asarray(rows.views, dtype=VIEW_DTYPE).reshape(n)
            f.create_dataset(VIEWS, data=written[VIEWS], **row_options(n))
        group = f.create_group(CODES_GROUP)
        chunks = {}
        keep = _rememberable(n, widths, dtype)  # else the chunks are built in one reused buffer, not kept
        for layer, width in widths.items():
            # fletcher32: a checksum per chunk, so bytes that change on disk fail loudly on read; the
            # chunks are written as HDF5's filter stores them (cache/_chunks.py), a merge's aligned
            # chunks copied as they were stored
            chunks[layer] = write_codes(group, layer, rows.codes.get(layer) or [], n, width, dtype, CODE_CHUNK_ROWS,
                                        keep=keep)
        failed = f.create_group(FAILED_GROUP)
        for name in FAILED_FIELDS:
            failed.create_dataset(name, data=tables[FAILED_GROUP][name])
        failed.create_dataset(STAT, data=tables[FAILED_GROUP][STAT])
        if MOVED_FROM in tables:
            f.create_dataset(MOVED_FROM, data=tables[MOVED_FROM])
        # the tables' attributes are read back for their digest, as before: reading them changes bytes
        # of the file HDF5 then writes (their dense storage's index), which stay as they were
        _, digest = stamp(f, written, {name: value for name, value in tables.items() if name != "attrs"})
    seen = _mark_checked(path)  # its tables are the ones just digested: linking it reads them without a second check
    if not keep:
        return digest
    failed = tables[FAILED_GROUP]
    _remember(seen, _Written(
        digest, [name.decode("utf-8") for name in tables[CLASS_NAMES].tolist()], written,
        written.get(VIEWS, np.zeros(n, VIEW_DTYPE)), {layer: (max(1, min(CODE_CHUNK_ROWS, n)), c) for layer, c in chunks.items()},
        [(text(p), text(k), text(r), tuple(int(v) for v in st)) for p, k, r, st in zip(
            failed["paths"].tolist(), failed["keys"].tolist(), failed["reasons"].tolist(), failed[STAT].tolist())],
        [text(p) for p in tables[MOVED_FROM].tolist()] if MOVED_FROM in tables else []))
    return digest


def _mark_checked(path) -> tuple:
    info = os.stat(path)
    if len(_tables_checked) > 4096:
        _tables_checked.clear()
    seen = (os.path.abspath(path), info.st_ino, info.st_size, info.st_mtime_ns)
    _tables_checked[seen] = True
    return seen


# --- segments this process wrote, remembered -------------------------------------------------------
# A segment is immutable once written. What this process wrote into one (its per-row arrays, failures,
# moved paths and stored code chunks) is kept for a while, so linking it and merging it into the next
# segment take them from memory instead of reading the file back: the same values (the bytes the file
# holds, decoded as reading them decodes them), without the reads and the checksums of every chunk.
# Bounded: the largest segments are dropped first (they merge least often); a merged-away segment at once.
WRITTEN_MEMORY = 64 << 20  # bytes of code chunks kept


@dataclass
class _Written:
    digest: str        # the segment's rows digest: a file recalled must be listed (or stamped) with it
    class_names: list
    arrays: dict       # per-row dataset name -> array as stored (labels, paths, keys, splits, stat, views?)
    views: np.ndarray  # each row's view index (zeros where the cache has no views)
    codes: dict        # layer -> (chunk rows, [stored chunks])
    failures: list     # [(path, key, reason, stat)] as read_failures reads them
    moved: list

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for _, chunks in self.codes.values() for c in chunks)


_written = {}  # (path, inode, size, mtime) -> _Written
_written_lock = threading.Lock()  # sessions of several caches may write at once, each on its own thread


def _rememberable(n, widths: dict, dtype) -> bool:
    """Whether a segment of ``n`` rows fits what is remembered: its stored chunks (rows padded to whole
    chunks, and each chunk's checksum) at most WRITTEN_MEMORY bytes, as _remember keeps them."""
    if WRITTEN_MEMORY <= 0:
        return False
    chunk_rows = max(1, min(CODE_CHUNK_ROWS, n))
    chunks = -(-n // chunk_rows)
    stored = sum(chunks * (chunk_rows * width * np.dtype(dtype).itemsize + 4) for width in widths.values())
    return stored <= WRITTEN_MEMORY


def _remember(seen, written: _Written) -> None:
    """Keep what was written into a segment (one that _rememberable admits), the largest dropped first
    past WRITTEN_MEMORY."""
    with _written_lock:
        _written[seen] = written
        while sum(w.nbytes for w in _written.values()) > WRITTEN_MEMORY:
            del _written[max(_written, key=lambda k: _written[k].nbytes)]


def _recall(path, digest):
    """What this process wrote into the segment file at ``path``, if it still remembers it and the file
    is the one with ``digest`` (the digest the cache file lists for it, or its own attribute); else None."""
    if not _written or not digest:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    with _written_lock:
        written = _written.get((os.path.abspath(path), info.st_ino, info.st_size, info.st_mtime_ns))
    return written if written is not None and written.digest == digest else None


def forget_written(path) -> None:
    """A segment merged away or dropped: no longer remembered."""
    path = os.path.abspath(path)
    with _written_lock:
        for seen in [s for s in _written if s[0] == path]:
            del _written[seen]


def _fixed_paths(paths) -> np.ndarray:
    """The paths as fixed_utf8 stores them; a merge's (bytes as stored) without a trip through str:
    the same bytes, the same width (the longest of these rows)."""
    if not isinstance(paths, np.ndarray):
        return fixed_utf8(paths)
    width = max(1, int(np.char.str_len(paths).max())) if len(paths) else 1
    return np.asarray(paths, dtype=h5py.string_dtype("utf-8", width)).reshape(len(paths))


def read_merge_rows(sources, widths: dict, class_names, dtype, digests=None) -> SegmentRows:
    """The rows of ``sources`` ([(segment path, [(start, stop), ...] sorted)]), in that order, as a
    merge copies them: arrays as stored, no per-row Python; the codes read straight into one array
    per layer (or their chunks taken as stored). Labels are re-indexed into ``class_names`` (the
    cache's table, which extends each segment's). ``digests``: path -> the digest the cache file lists
    for it; a segment this process wrote with that digest is taken from memory."""
    total = sum(stop - start for _, ranges in sources for start, stop in ranges)
    rows = SegmentRows(codes={layer: [MergedCodes(total, width, dtype)] for layer, width in widths.items()})
    columns = {name: [] for name in ("paths", "keys", "splits", "labels", "stats", "views")}
    index = {name: i for i, name in enumerate(class_names)}
    at = 0
    for path, ranges in sources:
        ranges = [(int(a), int(b)) for a, b in ranges if b > a]
        if not ranges:
            continue
        remembered = _recall(path, (digests or {}).get(path))  # this process wrote it: from memory
        with contextlib.nullcontext() if remembered is not None else open_segment(path) as f:
            names = remembered.class_names if remembered is not None else read_strings(f[CLASS_NAMES])
            remap = np.array([index.get(name, _NOT_LISTED) for name in names] + [UNLABELED], dtype=np.int32)
            lo, hi = min(a for a, _ in ranges), max(b for _, b in ranges)
            # one contiguous block read, then the live rows picked from it (as read_segment_rows does)
            pick = None if len(ranges) == 1 else np.concatenate([np.arange(a, b) for a, b in ranges]) - lo

            def block(name):
                if remembered is not None:
                    data = (remembered.views if name == VIEWS else remembered.arrays[name])[lo:hi]
                else:
                    data = _views(f, hi)[lo:hi] if name == VIEWS else f[name][lo:hi]
                return data if pick is None else data[pick]
            labels = block(LABELS)
            if len(labels) and int(labels.max()) >= len(names):
                raise damaged(path, "segment file", "a label is past its class table")
            labels = np.where(labels >= 0, remap[np.where(labels >= 0, labels, len(names))], np.int32(UNLABELED))
            if (labels == _NOT_LISTED).any():
                raise damaged(path, "segment file", "a row's class is not in the cache's class table")
            columns["labels"].append(labels.astype(np.int32))
            paths = block("paths")
            if paths.dtype.kind != "S":  # a segment from before fixed-width strings (variable-length ones)
                paths = fixed_utf8(paths.tolist())
            columns["paths"].append(paths)
            columns["keys"].append(np.asarray(block("keys"), dtype=KEY_DTYPE))
            columns["splits"].append(np.asarray(block("splits"), dtype=SPLIT_DTYPE))
            columns["stats"].append(block(STAT))
            columns["views"].append(block(VIEWS))
            for layer, width in widths.items():
                merged = rows.codes[layer][0]
                if remembered is not None:
                    position = at
                    for a, b in ranges:
                        _copy_remembered_codes(remembered, layer, a, b, position, merged, total, width)
                        position += b - a
                elif pick is None:
                    _copy_codes(f[CODES_GROUP][layer], lo, hi, at, merged, total, width, int(f.attrs.get("rows", -1)))
                else:
                    merged.rows[at:at + len(pick)] = f[CODES_GROUP][layer][lo:hi][pick]
        at += hi - lo if pick is None else len(pick)
    assert at == total
    rows.paths = _joined(columns["paths"], np.dtype("S1"))
    rows.keys = _joined(columns["keys"], KEY_DTYPE)
    rows.splits = _joined(columns["splits"], SPLIT_DTYPE)
    rows.labels = _joined(columns["labels"], np.dtype(np.int32))
    rows.stats = _joined(columns["stats"], np.dtype(np.int64)).reshape(total, len(STAT_COLUMNS))
    rows.views = _joined(columns["views"], VIEW_DTYPE)
    return rows


_NOT_LISTED = -3  # read_merge_rows: a class of the segment's table the cache's does not hold


def _copy_remembered_codes(remembered, layer, lo, hi, at, merged: MergedCodes, total, width) -> None:
    """As _copy_codes, from the chunks this process wrote (no read, no checksum to check)."""
    chunk = CODE_CHUNK_ROWS
    stored_chunk_rows, chunks = remembered.codes[layer]
    stored_rows = len(remembered.views)
    raw_ok = total >= chunk and stored_chunk_rows == chunk
    start = lo
    while start < hi:
        out, c = at + start - lo, start // stored_chunk_rows
        if raw_ok and start % chunk == 0 and out % chunk == 0:
            rows_in_chunk = min(chunk, stored_rows - start)
            if start + rows_in_chunk <= hi and (rows_in_chunk == chunk or out + rows_in_chunk == total):
                merged.raw[out] = chunks[c]
                start += rows_in_chunk
                continue
        stop = min(hi, (c + 1) * stored_chunk_rows)
        data = chunk_rows_of(chunks[c], merged.rows.dtype, width)
        merged.rows[out:out + stop - start] = data[start - c * stored_chunk_rows:stop - c * stored_chunk_rows]
        start = stop


def _copy_codes(dataset, lo, hi, at, merged: MergedCodes, total, width, stored_rows) -> None:
    """A source segment's rows lo:hi of one layer into ``merged`` at ``at``: each stored chunk that is
    whole a chunk of the merged segment (the same rows at a chunk boundary there, the same chunk
    shape) is taken as stored, its checksum checked; the other rows are read through HDF5."""
    chunk = CODE_CHUNK_ROWS
    raw_ok = (total >= chunk and stored_rows == dataset.shape[0] and stored_rows >= chunk
              and plain_fletcher32_chunks(dataset, chunk, width))
    start = lo
    while start < hi:
        taken = None
        out = at + start - lo
        if raw_ok and start % chunk == 0 and out % chunk == 0:
            rows_in_chunk = min(chunk, stored_rows - start)
            # a whole chunk, or the source's last (partial) one as the merged segment's last
            if start + rows_in_chunk <= hi and (rows_in_chunk == chunk or out + rows_in_chunk == total):
                taken = read_checked_chunk(dataset, start, chunk, width)
                if taken is not None and rows_in_chunk < chunk and taken[rows_in_chunk * width *
                                                                         dataset.dtype.itemsize:-4].any():
                    taken = None  # padding other than HDF5's zeros: rewritten, as HDF5 would
        if taken is not None:
            merged.raw[out] = taken
            start += rows_in_chunk
            continue
        stop = min(hi, (start // chunk + 1) * chunk)  # up to the source's next chunk boundary
        dataset.read_direct(merged.rows, np.s_[start:stop], np.s_[out:out + stop - start])
        start = stop


def _joined(parts, dtype) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def decoded_paths(paths) -> list:
    """A merge's stored paths (bytes) as the str the row index keys them by (schema.text's decoding)."""
    return [p.decode("utf-8") for p in paths.tolist()]


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
        return _segment_index(f, path, with_paths)


def read_segment_for_link(path):
    """(SegmentIndex, paths, attrs, failures, moved paths) of a shard, in one opening of its file:
    what linking it needs (read_segment_index, read_segment_failures and read_segment_moved). A shard
    this process wrote: its attributes read, the rest as written (the values reading them gives)."""
    with open_segment(path) as f:
        attrs = read_attrs(f)
        remembered = _recall(path, attrs.get(ROWS_DIGEST))
        if remembered is None:
            index, paths, attrs = _segment_index(f, path, True)
            moved = read_strings(f[MOVED_FROM]) if MOVED_FROM in f else []
            return index, paths, attrs, read_failures(f[FAILED_GROUP]), moved
    arrays = remembered.arrays
    index = SegmentIndex(os.path.basename(path), len(remembered.views), arrays["keys"], arrays[STAT],
                         arrays[LABELS], arrays["splits"], list(remembered.class_names), remembered.views)
    return index, decoded_paths(arrays["paths"]), attrs, list(remembered.failures), list(remembered.moved)


def _segment_index(f, path, with_paths):
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
