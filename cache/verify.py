"""`verify CACHE`: structure, counts and stored bytes checked; optionally the images behind the rows.

Every byte that holds data is read back and checked against what protects it (cache/_integrity.py):
the cache file's seal (or a packed file's heap seal), each segment's metadata checksums, tables
digest, rows digest (recomputed) and listed identity, every chunk's fletcher32 checksum. Each
problem names the file it is in: the cache file, or the segment.
"""
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import CacheError
from ._files import file_sha256
from .fingerprint import Fingerprint
from ._integrity import ROWS_DIGEST, TABLES_DIGEST, check_tables, open_sealed, rows_digest, stored_digest
from ._manifest import is_segmented, manifest_from_file, missing_folder, segment_folder
from .schema import (CODES_GROUP, FAILED_GROUP, LABELS, ROW_FIELDS, STAT, UNLABELED, VIEWS, as_text, read_attrs,
                     read_strings)
from ._segments import awaits_link, check_identity, open_segment, segment_seq

SPLITS = {"train", "val", "test"}


@dataclass
class VerifyReport:
    path: str
    rows: int = 0
    segments: int = 0
    chunks_checked: int = 0
    problems: list = field(default_factory=list)   # one line each
    changed: list = field(default_factory=list)    # --images: paths whose bytes differ from their key
    missing: list = field(default_factory=list)    # --images: paths with no file
    images_checked: int = 0
    worst_cosine: float = None                     # --recompute
    recomputed: int = 0
    retired: list = field(default_factory=list)    # segments no longer used, kept for readers (not a problem)

    @property
    def ok(self) -> bool:
        return not (self.problems or self.changed or self.missing)

    def to_dict(self) -> dict:
        """What `verify --json` prints."""
        return asdict(self) | {"ok": self.ok}

    def __repr__(self) -> str:
        said = "ok" if self.ok else (f"NOT OK: {len(self.problems)} problems, {len(self.changed)} changed, "
                                     f"{len(self.missing)} missing")
        return f"VerifyReport({self.path}: {self.rows:,} rows, {self.chunks_checked} chunks checked; {said})"


def verify_cache(path, images=False, data_root=None, recompute=None, min_cosine=None,
                 source_hasher=None) -> VerifyReport:
    """Structure, checksums and (images) the photos' bytes. recompute: a callable giving (worst
    cosine or None, rows compared, failures [(path, reason)]) of re-extracted rows (stage one's
    ``recompute_rows``: the cache package imports no stage), run once the file itself checks out;
    a worst cosine below ``min_cosine`` is a problem."""
    if recompute is not None and min_cosine is None:
        raise ValueError("verify_cache: recompute needs the min_cosine bar (extract.options.RECOMPUTE_MIN_COSINE)")
    report = _verify_file(os.fspath(path), images, data_root, source_hasher)
    if recompute is not None and not report.problems:
        worst, report.recomputed, failures = recompute()
        report.worst_cosine = worst
        report.missing += [f"{p} ({reason})" for p, reason in failures]
        if worst is not None and worst < min_cosine:
            report.problems.append(f"re-extracted codes differ: worst cosine {worst:.5f} < {min_cosine}")
    return report


def _verify_file(path, images, data_root, source_hasher) -> VerifyReport:
    report = VerifyReport(path)
    if not os.path.exists(path):
        raise CacheError(f"{path}: no such cache")
    try:
        f = open_sealed(path)
    except CacheError as exc:
        report.problems.append(f"the cache file {os.path.basename(path)}: {_said(exc, path)}")
        return report
    with f:
        try:
            attrs = read_attrs(f)
            segmented = is_segmented(f)
        except Exception as exc:  # noqa: BLE001  (an older, unsealed file: HDF5 names damage in many ways)
            report.problems.append(f"the cache file {os.path.basename(path)} cannot be read: {exc}")
            return report
        if segmented and not os.path.isdir(segment_folder(path)):
            report.problems.append(missing_folder(path))
            return report
        try:
            report.rows = len(f[LABELS])
            if segmented:
                _check_segments(path, f, attrs, report)
            else:
                _check_one_file(path, f, report)
            if not report.problems:  # the parts are sound: now what the cache makes of them
                _check_rows(f, attrs, report)
        except Exception as exc:  # noqa: BLE001
            report.problems.append(f"cannot read the cache's structure: {exc}")
            return report
        if images and not report.problems:
            _check_images(f, data_root or attrs.get("data_root"), report, source_hasher)
    return report


def _said(exc, path) -> str:
    """A CacheError's words without the path it starts with (the problem names the file itself)."""
    text = str(exc)
    return text[len(path) + 2:] if text.startswith(f"{path}: ") else text


def _check_one_file(path, f, report):
    """A packed (or schema-1) file: its tables, per-row datasets and codes, all in it."""
    where = f"the cache file {os.path.basename(path)}"
    try:
        check_tables(f, path, "cache file")
        _read_rows_whole(f, path, "cache file")
    except CacheError as exc:
        report.problems.append(f"{where}: {_said(exc, path)}")
        return
    _read_all_codes(f, report, where)


def _read_rows_whole(f, path, what):
    """Every per-row dataset read whole (its chunks' checksums checked)."""
    n = len(f[LABELS])
    for name in list(ROW_FIELDS) + [VIEWS]:
        if name in f:
            try:
                data = f[name][()]
            except Exception as exc:  # noqa: BLE001
                raise CacheError(f"{path}: /{name} fails its checksum or cannot be read ({exc})") from None
            if len(data) != n:
                raise CacheError(f"{path}: /{name} has {len(data)} rows, /labels {n}")


def _check_rows(f, attrs, report):
    n = len(f[LABELS])
    report.rows = n
    if "n_rows" in attrs and int(attrs["n_rows"]) != n:
        report.problems.append(f"n_rows says {attrs['n_rows']} but /labels has {n}")
    for name in ("paths", "keys", "splits") + ((STAT,) if STAT in f else ()):
        if len(f[name]) != n:
            report.problems.append(f"/{name} has {len(f[name])} rows, /labels {n}")
    for layer in f[CODES_GROUP]:
        if f[CODES_GROUP][layer].shape[0] != n:
            report.problems.append(f"/codes/{layer} has {f[CODES_GROUP][layer].shape[0]} rows, /labels {n}")
    labels = f[LABELS][()]
    classes = len(f["class_names"])
    if n and (((labels < 0) & (labels != UNLABELED)).any() or labels.max() >= classes):
        report.problems.append(f"labels outside the {classes} class names")
    bad_splits = set(as_text(f["splits"][()]).tolist()) - SPLITS
    if bad_splits:
        report.problems.append(f"unknown splits {sorted(bad_splits)}")
    paths = read_strings(f["paths"])
    if VIEWS in f:  # an image's augmented views share its path and follow its centre row
        views = f[VIEWS][()]
        if n and views[0] != 0:
            report.problems.append("the first row is an augmented view without its centre row")
        after = np.flatnonzero(views[1:] != 0) + 1
        orphans = int(sum(paths[i] != paths[i - 1] for i in after.tolist()))
        if orphans:
            report.problems.append(f"{orphans} augmented view rows do not follow their image's rows")
        paths = [p for p, v in zip(paths, views.tolist()) if v == 0]
    if len(set(paths)) != len(paths):
        report.problems.append(f"{len(paths) - len(set(paths))} duplicate paths")
    both = set(paths) & set(read_strings(f[FAILED_GROUP]["paths"]))
    if both:
        report.problems.append(f"{len(both)} paths are both a row and a failure (first: {sorted(both)[0]})")


def _check_segments(path, f, attrs, report):
    manifest = manifest_from_file(f)
    report.segments = len(manifest.segments)
    folder = segment_folder(path)
    expected = Fingerprint.from_attrs(attrs)
    if sum(stop - start for _, start, stop in manifest.ranges) != int(attrs.get("n_rows", -1)):
        report.problems.append(f"the cache file {os.path.basename(path)}: the live ranges do not add up to the row count")
    for name, stored in manifest.segments.items():
        seg_path = os.path.join(folder, name)
        if not os.path.isfile(seg_path):
            report.problems.append(f"segment {name} is missing from {folder}")
            continue
        _check_segment(seg_path, name, stored, manifest.digests.get(name), expected, report)
    for ranged in manifest.ranges:
        name, start, stop = ranged
        if not 0 <= start < stop <= manifest.segments.get(name, -1):
            report.problems.append(f"the cache file {os.path.basename(path)}: live range {ranged} lies outside "
                                   "its segment")
    unlisted = [n for n in os.listdir(folder) if segment_seq(n) is not None and n not in manifest.segments]
    linked_through = int(attrs.get("linked_through", 0))
    stray = []
    for name in unlisted:
        try:
            waiting = awaits_link(os.path.join(folder, name), linked_through)
        except CacheError as exc:
            fate = ("not in the cache yet (a shard not linked, or a merge cut short): move it aside"
                    if segment_seq(name) > linked_through else "no longer in use: the next extract deletes it")
            report.problems.append(f"segment {name} ({fate}): {_said(exc, os.path.join(folder, name))}")
            continue
        if waiting:
            stray.append(name)
        else:  # retired: kept while a reader may still hold an older cache file
            report.retired.append(name)
    if stray:
        report.problems.append(f"{len(stray)} committed shard(s) not yet linked (first: {stray[0]}); "
                               "the next extract links them")


def _check_segment(seg_path, name, stored, listed, expected, report):
    """One listed segment, read whole: its metadata, tables, identity, rows digest, chunks, paths."""
    try:
        with open_segment(seg_path) as seg:  # its tables' digest checked
            check_identity(seg_path, stored_digest(seg, ROWS_DIGEST), listed)
            seg_attrs = read_attrs(seg)
            if int(seg_attrs.get("rows", -1)) != stored or len(seg[LABELS]) != stored:
                report.problems.append(f"segment {name}: {len(seg[LABELS])} rows, the cache expects {stored}")
            if expected.differences(Fingerprint.from_attrs(seg_attrs)):
                report.problems.append(f"segment {name}: another extractor's fingerprint")
            _read_rows_whole(seg, seg_path, "segment file")
            digest = stored_digest(seg, ROWS_DIGEST)
            if digest is not None and rows_digest(seg, stored_digest(seg, TABLES_DIGEST) or "") != digest:
                report.problems.append(f"segment {name}: its rows do not match their SHA-256 digest")
            _read_all_codes(seg, report, f"segment {name}")
    except CacheError as exc:
        report.problems.append(f"segment {name}: {_said(exc, seg_path)}")


def _read_all_codes(h5, report, where):
    """Read every chunk: fletcher32 checksums fail the read when stored bytes changed."""
    for layer in h5[CODES_GROUP]:
        dset = h5[CODES_GROUP][layer]
        step = (dset.chunks or (4096,))[0] * 16
        for start in range(0, dset.shape[0], step):
            try:
                block = dset[start:start + step]
            except Exception as exc:  # noqa: BLE001  (a failed checksum, or damage HDF5 names otherwise)
                report.problems.append(f"{where}: /codes/{layer} rows {start}-{min(dset.shape[0], start + step) - 1} "
                                       f"fail their checksum or cannot be read ({exc})")
                break
            report.chunks_checked += -(-len(block) // (dset.chunks or (len(block),))[0]) if len(block) else 0
            if not np.isfinite(block).all():
                report.problems.append(f"{where}: /codes/{layer} rows {start}-{start + len(block) - 1} "
                                       "hold NaN or infinite values")
                break


def _check_images(f, data_root, report, source_hasher=None):
    """Re-hash every row's image still in the source; list changed and missing images. A folder is
    read here; another source (a manifest, tar shards, a URL prefix) through
    ``source_hasher(data_root)``, stage one's (extract/sources/__init__.py), which gives rel -> SHA-256 hex,
    or None where the source is not there."""
    if data_root and os.path.isdir(data_root):
        def digest_of(rel):
            return file_sha256(os.path.join(data_root, rel))
    elif data_root and source_hasher is not None:  # the source decides what it is (manifest, shards, URL)
        digest_of = source_hasher(data_root)
    else:
        digest_of = None
    if digest_of is None:
        report.problems.append(f"images=True: the data folder {data_root!r} is not here; pass data=DIR")
        return
    keys = as_text(f["keys"][()])
    for rel, key in zip(read_strings(f["paths"]), keys):
        try:
            digest = digest_of(rel)
        except FileNotFoundError:
            report.missing.append(rel)
            continue
        except OSError as exc:
            report.missing.append(f"{rel} ({exc.strerror})")
            continue
        report.images_checked += 1
        if digest != key:
            report.changed.append(rel)
