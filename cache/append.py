"""The one way to add rows to a cache: ``open_for_append(path, fingerprint)``.

It owns the write protocol so no caller has to know its order: take the lock, drop partial
files, check the fingerprint, link what a killed run committed, index the rows, then accept
rows shard by shard. Each shard becomes an immutable segment file (temporary name, rename), and
is then *linked*: the cache file is rewritten to include it, atomically; shards that wait while
the writer is busy become one segment (group commit). A kill at any moment loses at most what was
not committed: the job being written and those waiting; the next open finishes any interrupted link.

Costs grow with the new work: a link rewrites the small cache file (segments, live ranges,
failures), never the rows already stored. Replaced and pruned rows are cut out of the virtual
datasets' ranges; which segments to merge is cache/_compaction.py's pure policy.
"""
import contextlib
import os
import time
import numpy as np

from . import _compaction as compaction
from .errors import CacheError
from ._files import disk_full_as_one_line
from ._integrity import open_sealed
from .fingerprint import Fingerprint
from ._lock import cache_lock
from ._manifest import (Manifest, check_not_orphaned, check_segments_present, is_segmented, publish_manifest,
                       read_manifest, segment_folder)
from ._migrate import migrate_schema1
from ._reader_leases import no_readers
from ._row_index import Known, RowIndex
from .schema import SCHEMA_VERSION, read_attrs
from ._writer_thread import OrderedWriter
from ._segments import (MERGED, SHARD, SegmentIndex, SegmentRows, awaits_link, check_identity, decoded_paths,
                        forget_written,
                        open_segment, read_merge_rows, read_segment_for_link, read_segment_index, read_segment_rows,
                        segment_name, segment_seq, write_segment)

COLLECT_EVERY_SECONDS = 5.0   # how often a session looks for readers before deleting retired segments


def existing_fingerprint(cache_path):
    """The fingerprint of the cache's rows (or of a killed first run's shards), or None for a new cache."""
    cache_path = os.fspath(cache_path)
    candidates = [cache_path] if os.path.exists(cache_path) else []
    candidates += [os.path.join(segment_folder(cache_path), n) for n in _segment_files(cache_path)]
    for candidate in candidates:
        opener = open_sealed if candidate == cache_path else open_segment
        try:
            with opener(candidate) as f:
                return Fingerprint.from_attrs(read_attrs(f))
        except CacheError:
            raise
        except Exception as exc:  # noqa: BLE001  (h5py names a foreign or damaged file in many ways)
            raise CacheError(f"{candidate}: not a readable HDF5 cache ({exc}); "
                             "move it aside or pass a different cache=") from None
    return None


@contextlib.contextmanager
def open_for_append(cache_path, fingerprint: Fingerprint, widths: dict, class_names=(), background=True, lock=None):
    """An AppendSession under the cache's write lock; buffered rows are committed on exit.

    widths: layer -> code width. class_names: classes this run may add (kept sorted among themselves).
    lock: the WriteLock a caller took first (``cache_lock``), before its expensive set-up; None takes it here.
    """
    with _locked(cache_path, lock):
        session = AppendSession(os.fspath(cache_path), fingerprint, widths, class_names, background)
        try:
            yield session
        finally:
            session.close()


def _locked(cache_path, lock):
    if lock is None:
        return cache_lock(cache_path)
    if os.path.abspath(lock.cache_path) != os.path.abspath(os.fspath(cache_path)):
        raise ValueError(f"the write lock held is {lock.cache_path}'s, not {cache_path}'s")
    return contextlib.nullcontext(lock)


def recover(cache_path) -> int:
    """Link what a killed run committed and finish interrupted merges; returns shards linked."""
    with cache_lock(cache_path):
        fingerprint = existing_fingerprint(cache_path)
        if fingerprint is None:
            return 0
        session = AppendSession(os.fspath(cache_path), fingerprint, None, (), background=False)
        session.close()
        return session.recovered


def _segment_files(cache_path):
    folder = segment_folder(cache_path)
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if segment_seq(n) is not None)


_KEEP = object()  # carry_rows, move_rows: the row keeps the label it has
KEEP_LABEL = _KEEP
# A job joined from shards that waited for the writer holds at most this many bytes of codes: the
# merge cap (cache/_compaction.py), so that a joined segment that reaches it is never merged again and
# each of its rows is written once; 0: no joins. With the writer behind (bench/pipeline_ceiling_bench.py
# --writer-ceiling 64: 32,768 rows as fast as the loop hands them over) the main process wrote
# 3,500-4,200 images/s at a segment a shard, 6,800-8,000 with joins up to 32 MB, 13,300 up to 64 MB,
# 26,500 up to 128 MB, 24,500 up to 256 MB; extract's whole loop on 65,536 images with an infinitely
# fast network (--loop-ceiling 65536, its first version) 12,800-15,000 images/s and 59.6-70.9 CPU us an
# image up to 128 MB, where half the rows were merged again, 19,500-20,300 and 46.0-47.9 up to 256 MB
# (docs/benchmarks.md).
# A joined segment past the writer's kept chunks (_segments.WRITTEN_MEMORY, 64 MB) is read back from
# disk by a merge that takes it in.
JOINED_MAX_BYTES = compaction.MERGE_CAP_BYTES


class _Job:
    """What the writer writes as one segment: one commit_shard's rows (new rows and failures, carried
    rows, moved rows), or the new rows of several shards that waited for it (group commit,
    cache/_writer_thread.py), kept apart as ``parts`` until the writer joins them."""

    def __init__(self, parts, carried=(), moved=(), name_sets=None):
        self.parts, self.carried, self.moved = parts, carried, moved
        self.code_bytes = sum(array.nbytes for part in parts for arrays in part.codes.values() for array in arrays)
        self._name_sets = name_sets

    @property
    def shards(self) -> int:
        """commit_shard calls this job holds."""
        return len(self.parts)

    @property
    def rows(self) -> SegmentRows:
        """The parts as one SegmentRows (made once, on the writer's thread)."""
        if len(self.parts) > 1:
            rows = self.parts[0]
            for more in self.parts[1:]:
                rows.extend_rows(more)
                rows.extend_failures(more)
            self.parts = [rows]
        return self.parts[0]

    def name_sets(self) -> list:
        """The paths with a row or a failure here, a set for each part (made once each, and shared
        by the jobs a part joins: no copy of a growing job's paths at each join)."""
        if self._name_sets is None:
            self._name_sets = [set(p.paths) | set(p.failed_paths) for p in self.parts]
        return self._name_sets

    def shares_a_path_with(self, other: "_Job") -> bool:
        return any(not mine.isdisjoint(theirs) for mine in self.name_sets() for theirs in other.name_sets())

    @staticmethod
    def joined(waiting: "_Job", job: "_Job"):
        """A new job: ``waiting``'s rows, then ``job``'s, as one segment; None where they may not join:
        carried or moved rows (read from segments when written, and a moved row cuts its old path in
        the same commit), a path in both (the later row replaces the earlier: two commits), more than
        JOINED_MAX_BYTES of codes. Neither job is changed: the caller swaps the new one in at once, so
        a signal raised in the middle (Ctrl-C, SIGTERM) leaves the waiting job whole."""
        if JOINED_MAX_BYTES <= 0 or waiting.carried or waiting.moved or job.carried or job.moved:
            return None
        if waiting.code_bytes + job.code_bytes > JOINED_MAX_BYTES or waiting.shares_a_path_with(job):
            return None
        return _Job(waiting.parts + job.parts, name_sets=waiting.name_sets() + job.name_sets())


class AppendSession:
    """Rows in, segments out. Main thread: add_*, commit_shard, close. A writer thread does the
    file work (write, link, merge) in order, so encoding goes on while a shard is written."""

    def __init__(self, cache_path, fingerprint: Fingerprint, widths=None, class_names=(), background=True):
        self.cache_path = cache_path
        self.folder = segment_folder(cache_path)
        os.makedirs(self.folder, exist_ok=True)
        self.fingerprint = fingerprint
        self.widths = None
        self.committed = 0     # rows and failures linked by this session
        self.recovered = 0     # shards of a killed run linked on open
        self._buffer, self._carried, self._moved = SegmentRows(), [], []
        self._removals = set()
        self._moving = set()  # old paths handed to move_rows: each moves once
        self._vanished = None
        self._open = True
        self._rows = RowIndex()  # where each path's rows live
        self._retired = set()  # segment files no cache file version names any more, not yet deleted
        self._last_collect = None
        self._remove_partial_files()
        self.manifest = self._open_manifest()
        # A new segment's number is above every file here and every shard linked: a shard numbered at or
        # below linked_through would be taken for a retired file, and deleted, if a kill left it unlinked.
        # (next_seq was not rewritten when an open linked a killed run's shard, so it could lag behind.)
        self._next_seq = max([int(self.manifest.attrs.get("next_seq", 1)),
                              int(self.manifest.attrs.get("linked_through", 0)) + 1]
                             + [segment_seq(n) + 1 for n in _segment_files(cache_path)])
        self.manifest.attrs["next_seq"] = self._next_seq
        self._load_index()
        with self._disk_errors(0):
            self._recover_orphans()
        if widths is not None:
            self._set_widths(widths)
        self._extend_classes(class_names)
        self._writer = OrderedWriter(self._write_and_link, background, combine=_Job.joined)

    # --- what the cache holds -------------------------------------------------------------------
    def lookup(self, path):
        """Known(key, stat, failed) for a path the cache holds, else None."""
        known = self._rows.known(path)
        if known is not None:
            return known
        failure = self.manifest.failures.get(path)
        if failure is not None:
            return Known(failure[0], tuple(failure[2]), True, failure[1])
        return None

    def paths(self):
        """Every path with a row or a recorded failure."""
        return self._rows.paths() + [p for p in self.manifest.failures if p not in self._rows]

    # --- adding ---------------------------------------------------------------------------------
    def add_rows(self, paths, keys, splits, classes, stats, codes: dict, views=None) -> None:
        """codes: layer -> array [len(paths), width]. views: each row's view index (None: all 0,
        centre views); an image's augmented views come right after its centre row, same path."""
        self._writer.raise_pending()
        self._buffer.extend_rows(SegmentRows(
            paths=list(paths), keys=list(keys), splits=list(splits), classes=list(classes),
            stats=[tuple(s) for s in stats], views=[0] * len(paths) if views is None else [int(v) for v in views],
            codes={layer: [np.asarray(array, dtype=self.fingerprint.dtype)] for layer, array in codes.items()}))

    def add_failures(self, paths, keys, reasons, stats) -> None:
        rows = self._buffer
        rows.failed_paths += list(paths)
        rows.failed_keys += list(keys)
        rows.failed_reasons += list(reasons)
        rows.failed_stats += [tuple(s) for s in stats]

    def carry_rows(self, paths, stats, labels=None) -> None:
        """Rows whose bytes are unchanged: keep their codes, with a new stat (a touched file) and, when
        ``labels`` are given, the label the source gives them now (a manifest relabelled)."""
        labels = [_KEEP] * len(paths) if labels is None else list(labels)
        self._carried += list(zip(paths, (tuple(s) for s in stats), labels))

    def move_rows(self, old_paths, new_paths, stats, labels, splits) -> None:
        """Photos found under a new path (their bytes are those of a row held under the old one): the
        rows, views and codes go to the new path with its stat, label (None: unlabeled; a label of
        ``KEEP_LABEL``: as held) and split, and the old path's rows leave in the same commit."""
        old_paths = list(old_paths)
        for old in old_paths:
            if old in self._moving or old not in self._rows:
                raise ValueError(f"move_rows: {old} is {'moved already' if old in self._moving else 'not a row'}")
            self._moving.add(old)
        self._moved += list(zip(old_paths, new_paths, (tuple(s) for s in stats), labels, splits))

    def pending(self) -> int:
        return len(self._buffer) + len(self._carried) + len(self._moved)

    def remove(self, paths) -> None:
        """Drop these paths' rows and failures (applied when the session closes)."""
        self._removals.update(paths)

    def record_vanished(self, count: int) -> None:
        """How many rows the last walk found no file for (shown by `info`)."""
        self._vanished = int(count)

    def commit_shard(self) -> None:
        """Hand the buffered rows to the writer as one shard."""
        if not self.pending():
            return
        job = _Job([self._buffer], self._carried, self._moved)
        self._buffer, self._carried, self._moved = SegmentRows(), [], []
        self._writer.submit(job)

    def close(self) -> None:
        """Commit what is buffered, wait for the writer, apply removals."""
        if not self._open:
            return
        self._open = False
        try:
            self.commit_shard()
        finally:
            self._writer.close()
        self._writer.raise_pending()
        changed = bool(self._removals)
        if self._removals:
            self._cut({p for p in self._removals if p in self._rows})
            for path in self._removals:
                self.manifest.failures.pop(path, None)
            self._removals = set()
        if self._vanished is not None and self.manifest.attrs.get("vanished_rows") != self._vanished:
            self.manifest.attrs["vanished_rows"] = self._vanished
            changed = True
        if changed:
            with self._disk_errors(0):
                self._publish(self._settle())
        self._collect(force=True)

    # --- the writer's work ------------------------------------------------------------------------
    def _write_and_link(self, job: "_Job") -> None:
        with self._disk_errors(len(job.rows.paths) + len(job.carried) + len(job.moved)):
            self._write_and_link_unguarded(job.rows, job.carried, job.moved)

    def _disk_errors(self, rows):
        """A full disk or quota is one clear error (cache/_files.py); the space a step needs: the shard,
        a merge's share, the cache file."""
        return disk_full_as_one_line(self.cache_path, rows * self._row_bytes() * 2 + (64 << 20))

    def _write_and_link_unguarded(self, rows: SegmentRows, carried, moved=()) -> None:
        if carried:
            self._append_carried(rows, carried)
        if moved:
            self._append_moved(rows, [m for m in moved if m[0] in self._rows])
        seq = self._allocate_seq()
        name = segment_name(seq)
        attrs = dict(self.fingerprint.to_attrs(), kind=SHARD, seq=seq)
        write_segment(os.path.join(self.folder, name), attrs, self.manifest.class_names, rows, self.widths,
                      np.dtype(self.fingerprint.dtype))
        self._link(name)
        self.committed += len(rows)

    def _append_carried(self, rows: SegmentRows, carried):
        stat_of = {path: stat for path, stat, _ in carried}
        label_of = {path: label for path, _, label in carried}
        for segment, images in self._rows.image_rows(stat_of).items():  # an image's views go with it
            old = read_segment_rows(os.path.join(self.folder, segment),
                                    [i for local, n, _ in images for i in range(local, local + n)], self.widths)
            old.stats = [stat_of[path] for _, n, path in images for _ in range(n)]  # the same rows, new stat
            old.classes = [old_class if label_of[path] is _KEEP else label_of[path]
                           for old_class, path in zip(old.classes, (p for _, n, p in images for _ in range(n)))]
            rows.extend_rows(old)

    def _append_moved(self, rows: SegmentRows, moved):
        new_of = {old: (new, stat, label, split) for old, new, stat, label, split in moved}
        for segment, images in self._rows.image_rows(new_of).items():
            old = read_segment_rows(os.path.join(self.folder, segment),
                                    [i for local, n, _ in images for i in range(local, local + n)], self.widths)
            each = [new_of[path] for _, n, path in images for _ in range(n)]  # an image's views move with it
            old.paths = [new for new, _, _, _ in each]
            old.stats = [stat for _, stat, _, _ in each]
            old.classes = [held if label is _KEEP else label for held, (_, _, label, _) in zip(old.classes, each)]
            old.splits = [held if split is None else split for held, (_, _, _, split) in zip(old.splits, each)]
            rows.extend_rows(old)
        rows.moved_from += list(new_of)

    def _allocate_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        self.manifest.attrs["next_seq"] = self._next_seq
        return seq

    # --- linking a shard into the cache file ----------------------------------------------------
    def _link(self, name) -> None:
        """Make a written shard's rows and failures part of the cache (one atomic publish)."""
        path = os.path.join(self.folder, name)
        index, paths, attrs, failures, moved = read_segment_for_link(path)
        incoming = Fingerprint.from_attrs(attrs)
        incoming.check_can_join(Fingerprint.from_attrs(self.manifest.attrs), self.cache_path)
        self._adopt_classes(index.class_names, path)
        self._cut({p for p in paths if p in self._rows} | {f[0] for f in failures if f[0] in self._rows}
                  | {p for p in moved if p in self._rows})
        for p in paths:
            self.manifest.failures.pop(p, None)
        for p, key, reason, stat in failures:
            self.manifest.failures[p] = (key, reason, stat)
        self.manifest.segments[name] = index.rows
        self.manifest.digests[name] = attrs.get("digest") or ""
        if index.rows:
            self.manifest.ranges.append([name, 0, index.rows])
        self._rows.add(index, paths, [(0, index.rows)])
        stored = Fingerprint.from_attrs(self.manifest.attrs).merged_precision(incoming)
        self.manifest.attrs["precision"] = stored.precision
        self.manifest.attrs["linked_through"] = segment_seq(name)
        self._publish(self._settle())

    def _cut(self, paths) -> None:
        """Remove these paths' rows from the live ranges (their segments keep the bytes until merged)."""
        if not paths:
            return
        self.manifest.ranges = compaction.cut_ranges(self.manifest.ranges, self._rows.take(paths))

    def _settle(self) -> list:
        """Merge segments as cache/_compaction.py says; returns the segment files no longer referenced."""
        retired = compaction.unreferenced(self.manifest)
        for name in retired:
            self._forget(name)
        while (names := compaction.next_merge(self.manifest, self._row_bytes())) is not None:
            retired += self._merge(names)
        return retired

    def _merge(self, names) -> list:
        """Copy the live rows of ``names`` (adjacent segments) into one new segment."""
        # arrays as stored, codes read into one array (no per-row Python, one copy fewer)
        rows = read_merge_rows([(os.path.join(self.folder, name), self.manifest.ranges_of(name)) for name in names],
                               self.widths, self.manifest.class_names, np.dtype(self.fingerprint.dtype),
                               {os.path.join(self.folder, name): self.manifest.digests.get(name) for name in names})
        seq = self._allocate_seq()
        merged = segment_name(seq)
        attrs = dict(Fingerprint.from_attrs(self.manifest.attrs).to_attrs(), kind=MERGED, seq=seq)
        digest = write_segment(os.path.join(self.folder, merged), attrs, self.manifest.class_names, rows, self.widths,
                               np.dtype(self.fingerprint.dtype))
        n = len(rows.paths)
        compaction.apply_merge(self.manifest, names, merged, n)
        self.manifest.digests[merged] = digest
        for name in names:
            self._rows.forget(name)
            self.manifest.digests.pop(name, None)
            forget_written(os.path.join(self.folder, name))  # merged away: not read again by this session
        # the merged segment's index from the rows just written (what reading it back gave)
        index = SegmentIndex(merged, n, rows.keys, rows.stats, rows.labels, rows.splits,
                             list(self.manifest.class_names), rows.views)
        self._rows.add(index, decoded_paths(rows.paths), [(0, n)])
        return list(names)

    def _forget(self, name):
        forget_written(os.path.join(self.folder, name))
        compaction.forget(self.manifest, name)
        self.manifest.digests.pop(name, None)
        self._rows.forget(name)

    def _publish(self, retired) -> None:
        publish_manifest(self.cache_path, self.manifest)
        self._retired.update(retired)  # after the publish: the new cache file no longer names them
        self._collect()

    def _collect(self, force=False) -> None:
        """Delete the retired segments, unless a reader may still hold a cache file that names them
        (cache/_reader_leases.py); then they wait for a later try, in this session or the next."""
        now = time.monotonic()
        if not self._retired or (not force and self._last_collect is not None
                                 and now - self._last_collect < COLLECT_EVERY_SECONDS):
            return
        self._last_collect = now
        with no_readers(self.cache_path) as free:
            if not free:
                return
            for name in sorted(self._retired):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.folder, name))
            self._retired.clear()

    def _row_bytes(self) -> int:
        return max(1, sum((self.widths or {}).values()) * np.dtype(self.fingerprint.dtype).itemsize)

    # --- opening --------------------------------------------------------------------------------
    def _remove_partial_files(self):
        """Files still under a temporary name were in flight when a run died."""
        for name in os.listdir(self.folder):
            if name.endswith(".tmp"):
                os.remove(os.path.join(self.folder, name))
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{self.cache_path}.tmp")

    def _open_manifest(self) -> Manifest:
        check_not_orphaned(self.cache_path)
        existing = existing_fingerprint(self.cache_path)
        if existing is not None:
            self.fingerprint.check_can_join(existing, self.cache_path)
        if os.path.exists(self.cache_path):
            with open_sealed(self.cache_path) as f:
                segmented = is_segmented(f)
            if not segmented:
                migrate_schema1(self.cache_path, self._first_free_seq())
            manifest = read_manifest(self.cache_path)
            check_segments_present(self.cache_path, manifest)
            self.widths = dict(manifest.attrs["widths"])
            return manifest
        first = existing or self.fingerprint
        self.widths = None
        attrs = dict(first.to_attrs(), schema_version=SCHEMA_VERSION, linked_through=0, next_seq=1,
                     created=first.provenance.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        return Manifest(attrs)

    def _first_free_seq(self) -> int:
        return max([0] + [segment_seq(n) for n in _segment_files(self.cache_path)]) + 1

    def _set_widths(self, widths: dict) -> None:
        if self.widths is None:
            self.widths = dict(widths)
            self.manifest.attrs["widths"] = self.widths
        elif dict(widths) != self.widths:
            raise CacheError(f"{self.cache_path}: code widths {self.widths} differ from this run's {dict(widths)}")

    def _load_index(self):
        for name in self.manifest.segments:
            path = os.path.join(self.folder, name)
            index, paths, attrs = read_segment_index(path)
            check_identity(path, attrs.get("digest"), self.manifest.digests.get(name))
            self._rows.add(index, paths, self.manifest.ranges_of(name))

    def _recover_orphans(self):
        """Shards a killed run wrote but did not link are linked now; half-done merges and segments
        retired earlier (kept then for readers) are dropped once no reader may need them."""
        linked_through = int(self.manifest.attrs.get("linked_through", 0))
        retired = []
        for name in _segment_files(self.cache_path):
            if name in self.manifest.segments:
                continue
            path = os.path.join(self.folder, name)
            try:
                waiting = awaits_link(path, linked_through)
            except CacheError:
                if segment_seq(name) > linked_through:  # perhaps a shard a killed run committed: its rows
                    raise CacheError(f"{path}: a segment file not yet in the cache (a shard a killed run wrote, or "
                                     "a merge cut short) is damaged; move it aside and re-run: its photos are "
                                     "extracted again") from None
                retired.append(name)  # damaged, and no longer in use: deleted as any retired segment
                continue
            if waiting:
                with open_segment(path) as f:
                    self._set_widths({layer: f["codes"][layer].shape[1] for layer in f["codes"]})
                self._link(name)  # links, settles and publishes
                self.recovered += 1
            else:
                retired.append(name)
        self._retired.update(retired)
        settled = self._settle()
        if settled:
            self._publish(settled)
        self._collect(force=True)

    def _extend_classes(self, class_names):
        new = sorted(set(class_names) - set(self.manifest.class_names))
        self.manifest.class_names = list(self.manifest.class_names) + new

    def _adopt_classes(self, names, path):
        current = self.manifest.class_names
        if list(names[:len(current)]) != list(current):
            raise CacheError(f"{path}: its class table does not extend the cache's; move the file aside and re-run")
        if len(names) > len(current):
            self.manifest.class_names = list(names)
