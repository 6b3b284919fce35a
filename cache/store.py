"""Writing the cache: shards committed atomically, then folded into the one cache file.

A run writes its work as shard files in ``<cache>.shards/``: each is written under a temporary
name and renamed when complete, so a kill at any moment loses at most the shard in flight.
``recover_shards`` folds committed shards into ``<cache>`` by writing a new file beside it and
renaming it into place; it is idempotent, so a kill during the fold is repaired by the next run.
"""
import glob
import os
import queue
import threading
import time
from dataclasses import dataclass, field

import h5py
import numpy as np

from .errors import CacheError, FingerprintMismatch
from .files import publish
from .lock import cache_lock
from .schema import (CLASS_NAMES, CODE_CHUNK_ROWS, CODES_GROUP, FAILED_FIELDS, FAILED_GROUP, LABELS,
                     ROW_STRING_FIELDS, SCHEMA_VERSION, STR, describe_attr, fingerprint_differences, read_attrs,
                     read_strings, write_attrs)

__all__ = ["CacheWriter", "cache_lock", "recover_shards", "read_done_index", "shard_dir"]

ROW_CLASSES = "row_classes"  # shards store each row's class name; the cache stores labels
COPY_BLOCK_ROWS = 4096


def shard_dir(cache_path) -> str:
    return f"{cache_path}.shards"


@dataclass
class ShardRows:
    """Rows and failures of one shard, as plain lists and arrays."""
    paths: list = field(default_factory=list)
    keys: list = field(default_factory=list)
    splits: list = field(default_factory=list)
    classes: list = field(default_factory=list)
    codes: dict = field(default_factory=dict)  # layer -> list of [n, D] arrays
    failed_paths: list = field(default_factory=list)
    failed_keys: list = field(default_factory=list)
    failed_reasons: list = field(default_factory=list)

    def __len__(self):
        return len(self.paths) + len(self.failed_paths)


def _check_fingerprint(cache_path, existing: dict, new: dict) -> None:
    diffs = fingerprint_differences(existing, new)
    if diffs:
        detail = "; ".join(f"{k}: cache has {describe_attr(existing.get(k))}, this run {describe_attr(new.get(k))}"
                           for k in diffs)
        raise FingerprintMismatch(
            f"{cache_path}: refusing to append codes from a different extractor ({detail}); "
            "use the cache's settings or write to a new --cache file")


class CacheWriter:
    """Buffers extracted rows and commits them as shard files, on a background thread.

    attrs: the fingerprint and provenance attributes of the cache (see README).
    widths: layer name -> code width. dtype: numpy dtype of the stored codes.
    """

    def __init__(self, cache_path, attrs: dict, widths: dict, dtype, background=True):
        self.cache_path = os.fspath(cache_path)
        self.attrs = dict(attrs)
        self.widths = dict(widths)
        self.dtype = np.dtype(dtype)
        self.rows = ShardRows()
        self.committed = 0
        self._run_id = f"{time.time_ns():020d}"
        self._seq = 0
        self._error = None
        self._queue = queue.Queue(maxsize=2) if background else None
        self._thread = None
        os.makedirs(shard_dir(self.cache_path), exist_ok=True)
        if background:
            self._thread = threading.Thread(target=self._drain, name="cache-writer", daemon=True)
            self._thread.start()

    def add_rows(self, paths, keys, splits, classes, codes: dict) -> None:
        """codes: layer -> array [len(paths), width]."""
        self._raise_pending()
        self.rows.paths += list(paths)
        self.rows.keys += list(keys)
        self.rows.splits += list(splits)
        self.rows.classes += list(classes)
        for layer, array in codes.items():
            self.rows.codes.setdefault(layer, []).append(np.asarray(array, dtype=self.dtype))

    def add_failures(self, paths, keys, reasons) -> None:
        self.rows.failed_paths += list(paths)
        self.rows.failed_keys += list(keys)
        self.rows.failed_reasons += list(reasons)

    def pending(self) -> int:
        return len(self.rows)

    def commit_shard(self) -> None:
        """Hand the buffered rows to the writer thread as one shard."""
        if not len(self.rows):
            return
        rows, self.rows = self.rows, ShardRows()
        self._seq += 1
        name = os.path.join(shard_dir(self.cache_path), f"shard-{self._run_id}-{self._seq:06d}.h5")
        if self._queue is None:
            self._write_shard(name, rows)
        else:
            self._raise_pending()
            self._queue.put((name, rows))

    def close(self) -> None:
        """Commit what is buffered and wait until every shard is on disk."""
        self.commit_shard()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._raise_pending()

    def _drain(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._write_shard(*item)
                except BaseException as exc:  # reported on the main thread
                    self._error = exc

    def _raise_pending(self):
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _write_shard(self, final_name, rows: ShardRows) -> None:
        tmp = final_name + ".tmp"
        with h5py.File(tmp, "w") as f:
            write_attrs(f, self.attrs)
            for name in ROW_STRING_FIELDS:
                f.create_dataset(name, data=np.array(getattr(rows, name), dtype=STR))
            f.create_dataset(ROW_CLASSES, data=np.array(rows.classes, dtype=STR))
            group = f.create_group(CODES_GROUP)
            for layer, width in self.widths.items():
                parts = rows.codes.get(layer) or [np.zeros((0, width), self.dtype)]
                group.create_dataset(layer, data=np.concatenate(parts))
            failed = f.create_group(FAILED_GROUP)
            for name in FAILED_FIELDS:
                failed.create_dataset(name, data=np.array(getattr(rows, f"failed_{name}"), dtype=STR))
        publish(tmp, final_name)
        self.committed += len(rows)


def read_done_index(cache_path):
    """(rows, failures): dicts path -> content key of what the cache already holds."""
    if not os.path.exists(cache_path):
        return {}, {}
    with h5py.File(cache_path, "r") as f:
        rows = dict(zip(read_strings(f["paths"]), read_strings(f["keys"])))
        failed = dict(zip(read_strings(f[FAILED_GROUP]["paths"]), read_strings(f[FAILED_GROUP]["keys"])))
    return rows, failed


def existing_fingerprint(cache_path):
    """The cache's attributes, or those of its oldest committed shard, or None for a new cache."""
    for candidate in [cache_path] + _committed_shards(cache_path):
        if os.path.exists(candidate):
            try:
                with h5py.File(candidate, "r") as f:
                    return read_attrs(f)
            except OSError as exc:
                raise CacheError(f"{candidate}: not a readable HDF5 cache ({exc}); "
                                 "move it aside or pass a different --cache") from None
    return None


def check_fingerprint(cache_path, attrs: dict) -> None:
    existing = existing_fingerprint(cache_path)
    if existing is not None:
        _check_fingerprint(cache_path, existing, attrs)


def _committed_shards(cache_path):
    return sorted(glob.glob(os.path.join(shard_dir(cache_path), "shard-*.h5")))


def remove_partial_shards(cache_path) -> None:
    """Shards still under their temporary name were in flight when a run died: drop them."""
    for tmp in glob.glob(os.path.join(shard_dir(cache_path), "*.tmp")):
        os.remove(tmp)
    if os.path.exists(f"{cache_path}.tmp"):
        os.remove(f"{cache_path}.tmp")


def recover_shards(cache_path) -> int:
    """Fold every committed shard into the cache file; returns how many shards were folded.

    The caller holds the cache lock. Rows already in the cache with the same content key are
    skipped, so folding the same shard twice changes nothing.
    """
    cache_path = os.fspath(cache_path)
    remove_partial_shards(cache_path)
    shards = _committed_shards(cache_path)
    if not shards:
        return 0
    old = _OldCache(cache_path)
    plan = _FoldPlan(old)
    shard_files = []
    try:
        for path in shards:
            shard = h5py.File(path, "r")
            shard_files.append(shard)
            attrs = read_attrs(shard)
            if old.attrs is None and plan.attrs is None:
                plan.attrs = attrs
            _check_fingerprint(cache_path, old.attrs or plan.attrs, attrs)
            plan.add_shard(len(shard_files) - 1, shard, attrs)
        _write_folded(cache_path, old, plan, shard_files)
    finally:
        for shard in shard_files:
            shard.close()
        old.close()
    for path in shards:
        os.remove(path)
    return len(shards)


class _OldCache:
    """The current cache file's index, or an empty one."""

    def __init__(self, cache_path):
        self.file = None
        self.attrs = None
        self.paths, self.keys, self.splits, self.classes = [], [], [], []
        self.failures = {}
        if os.path.exists(cache_path):
            self.file = h5py.File(cache_path, "r")
            self.attrs = read_attrs(self.file)
            names = read_strings(self.file[CLASS_NAMES])
            self.paths = read_strings(self.file["paths"])
            self.keys = read_strings(self.file["keys"])
            self.splits = read_strings(self.file["splits"])
            self.classes = [names[i] for i in self.file[LABELS][()]]
            failed = self.file[FAILED_GROUP]
            for p, k, r in zip(*(read_strings(failed[n]) for n in FAILED_FIELDS)):
                self.failures[p] = (k, r)

    def close(self):
        if self.file is not None:
            self.file.close()


class _FoldPlan:
    """Which rows survive the fold: path -> (source, index), in output order.

    source is -1 for the old cache file, else the shard's position. A newer row or failure for
    the same path replaces the older one (the file changed); an identical row is kept as it is.
    """

    def __init__(self, old: _OldCache):
        self.attrs = None
        self.precisions = set(filter(None, str((old.attrs or {}).get("precision", "")).split(",")))
        self.rows = {p: (-1, i) for i, p in enumerate(old.paths)}
        self.key_of = dict(zip(old.paths, old.keys))
        self.failures = dict(old.failures)
        self.shard_meta = []

    def add_shard(self, position, shard, attrs):
        self.precisions.update(filter(None, str(attrs.get("precision", "")).split(",")))
        paths, keys = read_strings(shard["paths"]), read_strings(shard["keys"])
        meta = {"splits": read_strings(shard["splits"]), "classes": read_strings(shard[ROW_CLASSES])}
        self.shard_meta.append(meta)
        for i, (p, k) in enumerate(zip(paths, keys)):
            if self.key_of.get(p) == k:
                continue
            self.rows.pop(p, None)
            self.failures.pop(p, None)
            self.rows[p] = (position, i)
            self.key_of[p] = k
        failed = shard[FAILED_GROUP]
        for p, k, r in zip(*(read_strings(failed[n]) for n in FAILED_FIELDS)):
            if self.rows.pop(p, None) is not None:
                self.key_of.pop(p, None)
            self.failures[p] = (k, r)


def _write_folded(cache_path, old: _OldCache, plan: _FoldPlan, shard_files) -> None:
    attrs = dict(old.attrs or plan.attrs)
    attrs["precision"] = ",".join(sorted(plan.precisions))
    attrs["schema_version"] = SCHEMA_VERSION
    attrs["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    order = list(plan.rows.items())
    n = len(order)
    row_meta = []
    for path, (src, i) in order:
        if src < 0:
            row_meta.append((path, old.keys[i], old.splits[i], old.classes[i]))
        else:
            meta = plan.shard_meta[src]
            row_meta.append((path, plan.key_of[path], meta["splits"][i], meta["classes"][i]))
    class_names = sorted({m[3] for m in row_meta} | set(_old_class_names(old)))
    index = {c: j for j, c in enumerate(class_names)}
    layers = list(attrs["layers"])
    tmp = f"{cache_path}.tmp"
    with h5py.File(tmp, "w") as out:
        write_attrs(out, attrs)
        for j, name in enumerate(("paths", "keys", "splits")):
            out.create_dataset(name, data=np.array([m[j] for m in row_meta], dtype=STR))
        out.create_dataset(LABELS, data=np.array([index[m[3]] for m in row_meta], dtype=np.int32))
        out.create_dataset(CLASS_NAMES, data=np.array(class_names, dtype=STR))
        group = out.create_group(CODES_GROUP)
        for layer in layers:
            _write_layer(group, layer, order, old, shard_files)
        failed = out.create_group(FAILED_GROUP)
        fail_items = sorted(plan.failures.items())
        failed.create_dataset("paths", data=np.array([p for p, _ in fail_items], dtype=STR))
        failed.create_dataset("keys", data=np.array([kr[0] for _, kr in fail_items], dtype=STR))
        failed.create_dataset("reasons", data=np.array([kr[1] for _, kr in fail_items], dtype=STR))
        out.attrs["n_rows"] = n
    publish(tmp, cache_path)


def _old_class_names(old: _OldCache):
    return read_strings(old.file[CLASS_NAMES]) if old.file is not None else []


def _write_layer(group, layer, order, old: _OldCache, shard_files) -> None:
    sources = [old.file[CODES_GROUP][layer]] if old.file is not None else []
    sources += [s[CODES_GROUP][layer] for s in shard_files]
    width, dtype = sources[0].shape[1], sources[0].dtype
    n = len(order)
    dset = group.create_dataset(layer, shape=(n, width), dtype=dtype, maxshape=(None, width),
                                chunks=(max(1, min(CODE_CHUNK_ROWS, n)), width))
    # Copy runs of consecutive rows from one source in blocks, so a large old cache streams.
    offset = 0
    start = 0
    while start < n:
        src, first = order[start][1]
        end = start + 1
        while (end < n and end - start < COPY_BLOCK_ROWS and order[end][1][0] == src
               and order[end][1][1] == first + (end - start)):
            end += 1
        source = old.file[CODES_GROUP][layer] if src < 0 else shard_files[src][CODES_GROUP][layer]
        dset[offset:offset + end - start] = source[first:first + end - start]
        offset += end - start
        start = end
