"""The cache file itself: small tables plus virtual datasets over the segment files.

Rewriting it costs O(segments + live ranges + failures), not O(rows): the rows stay in their
segments. It is replaced atomically (temporary name, fsync, rename), so a reader sees either the
old or the new list of rows, never a mix.
"""
import os
import time
from dataclasses import dataclass, field

import h5py
import numpy as np

from .errors import CacheError
from ._files import new_hdf5
from ._integrity import DIGESTS, open_sealed
from .schema import (CLASS_NAMES, CODES_GROUP, FAILED_GROUP, LABELS, ROW_FIELDS, SCHEMA_VERSION,
                     SEGMENTS_GROUP, STAT, STAT_COLUMNS, STR, VIEW_DTYPE, VIEWS, read_attrs, read_failures, read_strings,
                     text, write_attrs)


PUBLISHED_MARK = "published"  # in the sidecar folder once its cache file has been written


def segment_folder(cache_path) -> str:
    """The sidecar folder: segment files, shards in flight and the write lock."""
    return f"{os.fspath(cache_path)}.shards"


@dataclass
class Manifest:
    attrs: dict                                       # fingerprint, provenance, counters
    class_names: list = field(default_factory=list)   # append-only: a label never changes meaning
    segments: dict = field(default_factory=dict)      # name -> rows stored in it, in row order
    ranges: list = field(default_factory=list)        # [name, start, stop] live rows, in row order
    failures: dict = field(default_factory=dict)      # path -> (key, reason, stat)
    digests: dict = field(default_factory=dict)       # segment name -> its digest ("" for older segments)

    @property
    def n_rows(self) -> int:
        return sum(stop - start for _, start, stop in self.ranges)

    def live_rows(self, name) -> int:
        return sum(stop - start for n, start, stop in self.ranges if n == name)

    def ranges_of(self, name) -> list:
        return [(start, stop) for n, start, stop in self.ranges if n == name]


def is_segmented(h5file) -> bool:
    return SEGMENTS_GROUP in h5file


def read_manifest(cache_path) -> Manifest:
    """The cache file's tables, once its seal is checked (cache/_integrity.py)."""
    with open_sealed(cache_path) as f:
        try:
            return manifest_from_file(f)
        except CacheError:
            raise
        except Exception as exc:  # noqa: BLE001  (an unsealed older file, damaged)
            raise CacheError(f"{cache_path}: the cache file is damaged ({exc}); run `cnncodes verify {cache_path}`, "
                             "and restore it from a copy or re-extract into a new cache=") from None


def manifest_from_file(f) -> Manifest:
    attrs = read_attrs(f)
    group = f[SEGMENTS_GROUP]
    names = read_strings(group["names"])
    rows = group["rows"][()].tolist()
    live = group["ranges"][()]
    if len(rows) != len(names) or (len(live) and (live[:, 0].min() < 0 or live[:, 0].max() >= len(names))):
        raise CacheError(f"{f.filename}: the cache file's segment table does not add up; run `cnncodes verify "
                         f"{f.filename}`")
    ranges = [[names[int(s)], int(a), int(b)] for s, a, b in live]
    failures = {p: (k, r, s) for p, k, r, s in read_failures(f[FAILED_GROUP])}
    listed = group["names"].attrs.get(DIGESTS)  # each segment's digest (cache/_integrity.py); older files: none
    digests = dict(zip(names, [text(d) for d in listed])) if listed is not None and len(listed) == len(names) else {}
    return Manifest(attrs, read_strings(f[CLASS_NAMES]), dict(zip(names, rows)), ranges, failures, digests)


def publish_manifest(cache_path, manifest: Manifest) -> None:
    """Write the cache file for ``manifest`` beside it and rename it into place."""
    cache_path = os.fspath(cache_path)
    folder = os.path.basename(segment_folder(cache_path))
    attrs = dict(manifest.attrs)
    attrs["schema_version"] = SCHEMA_VERSION
    attrs["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    attrs["n_rows"] = manifest.n_rows
    widths = attrs["widths"]
    dtype = np.dtype(attrs["dtype"])
    with new_hdf5(cache_path, sealed=True) as out:
        write_attrs(out, attrs)
        out.create_dataset(CLASS_NAMES, data=np.array(manifest.class_names, dtype=STR))
        fields = [(name, dt, (len(STAT_COLUMNS),) if name == STAT else ()) for name, dt in ROW_FIELDS.items()]
        if attrs.get("views"):
            fields.append((VIEWS, VIEW_DTYPE, ()))
        fields += [(f"{CODES_GROUP}/{layer}", dtype, (width,)) for layer, width in widths.items()]
        for name, dt, tail in fields:
            _virtual(out, name, dt, tail, manifest, folder)
        if STAT in out:
            out[STAT].attrs["columns"] = np.array(STAT_COLUMNS, dtype=STR)
        _write_failures(out, manifest.failures)
        _write_segment_table(out, manifest)
    mark = os.path.join(segment_folder(cache_path), PUBLISHED_MARK)
    if not os.path.exists(mark):  # after the file: a folder with the mark has had a cache file
        with open(mark, "wb"):
            pass


def check_not_orphaned(cache_path) -> None:
    """Refuse a sidecar folder whose cache file was deleted: its rows belonged to that file, and
    linking them into a new cache would bring deleted codes back (or refuse new settings for them)."""
    folder = segment_folder(cache_path)
    if not os.path.exists(cache_path) and os.path.exists(os.path.join(folder, PUBLISHED_MARK)):
        raise CacheError(f"{cache_path} is gone but {folder}/ still holds its rows (a cache is the file and that "
                         f"folder together); restore {os.path.basename(cache_path)} beside it, or delete the folder "
                         f"too (rm -r {folder}) to start a new cache")


def missing_row_fill(name, folder):
    """What a row reads as, by any HDF5 reader, when its segment file is not there (the cache file
    copied without its folder): never data. HDF5 fills a virtual dataset's unreachable rows with its
    fill value, which would otherwise be 0: all-zero codes, label 0 and an empty path.
    None: leave HDF5's default (fixed-width strings, whose virtual fill values h5py 3.16 writes
    as garbage; keys and splits then read empty, which is no key and no split)."""
    if name.startswith(f"{CODES_GROUP}/"):
        return np.nan
    return {LABELS: -1, STAT: -1, VIEWS: np.iinfo(VIEW_DTYPE).max,
            "paths": f"MISSING ROW: the segment folder {folder}/ is not beside this file; copy both, or one "
                     "self-contained file made by `cnncodes pack`"}.get(name)


def _virtual(out, name, dtype, tail, manifest: Manifest, folder):
    """One per-row dataset: a virtual dataset over the live ranges (a plain empty one for no rows)."""
    n = manifest.n_rows
    if n == 0:
        out.create_dataset(name, shape=(0,) + tail, dtype=dtype, maxshape=(None,) + tail)
        return
    layout = h5py.VirtualLayout(shape=(n,) + tail, dtype=dtype)
    # no times in the dataset's header (HDF5 stores four by default here; h5py's create_dataset none):
    # a publish of the same manifest writes the same bytes, whatever the second it runs in
    layout.dcpl.set_obj_track_times(False)
    offset = 0
    source_name = name.encode("utf-8")
    for seg, start, stop in manifest.ranges:
        # what ``layout[offset:...] = h5py.VirtualSource(...)[start:stop]`` maps, without its deep copy of
        # the source for every range (a third of a publish's CPU)
        layout.dcpl.set_virtual(_rows_space((n,) + tail, offset, stop - start), os.fsencode(f"{folder}/{seg}"),
                                source_name, _rows_space((manifest.segments[seg],) + tail, start, stop - start))
        offset += stop - start
    fill = missing_row_fill(name, folder)
    if fill is not None:  # set on the layout's property list: h5py's fillvalue= cannot take a UTF-8 string
        layout.dcpl.set_fill_value(np.array([fill], dtype=dtype))
    out.create_virtual_dataset(name, layout)


def _rows_space(shape, start, count):
    """A dataspace of ``shape`` with rows start:start+count selected, as h5py's slicing of a virtual
    layout or source selects them (a regular hyperslab, set again as h5py's VDS code does)."""
    space = h5py.h5s.create_simple(shape)
    space.select_hyperslab((start,) + (0,) * (len(shape) - 1), (count,) + tuple(shape[1:]))
    start, stride, count, block = space.get_regular_hyperslab()
    space.select_hyperslab(start, count, stride, block)
    return space


def _write_failures(out, failures: dict):
    items = sorted(failures.items())
    group = out.create_group(FAILED_GROUP)
    group.create_dataset("paths", data=np.array([p for p, _ in items], dtype=STR))
    group.create_dataset("keys", data=np.array([v[0] for _, v in items], dtype=STR))
    group.create_dataset("reasons", data=np.array([v[1] for _, v in items], dtype=STR))
    group.create_dataset(STAT, data=np.array([v[2] for _, v in items], dtype=np.int64).reshape(-1, len(STAT_COLUMNS)))


def _write_segment_table(out, manifest: Manifest):
    group = out.create_group(SEGMENTS_GROUP)
    names = list(manifest.segments)
    position = {name: i for i, name in enumerate(names)}
    group.create_dataset("names", data=np.array(names, dtype=STR))
    group.create_dataset("rows", data=np.array([manifest.segments[n] for n in names], dtype=np.int64))
    group.create_dataset("ranges", data=np.array([[position[s], a, b] for s, a, b in manifest.ranges],
                                                 dtype=np.int64).reshape(-1, 3))
    # each segment's digest, as an attribute of the names: a segment swapped for another file is refused
    group["names"].attrs[DIGESTS] = np.array([manifest.digests.get(n) or "" for n in names], dtype="S64")


def missing_folder(cache_path) -> str:
    """Why a segmented cache file has no rows here, and the fix (said by open_cache and verify)."""
    return (f"the segment folder {segment_folder(cache_path)} is missing (every row lives there; the file was "
            "moved or copied without it): keep the two together, or move one self-contained file made by "
            f"`cnncodes pack {cache_path} --out FILE.h5`")


def check_segments_present(cache_path, manifest: Manifest) -> None:
    """A missing segment would read as zeros through HDF5's virtual datasets: refuse instead."""
    folder = segment_folder(cache_path)
    missing = [name for name in manifest.segments if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        if not os.path.isdir(folder):
            raise CacheError(f"{cache_path}: {missing_folder(cache_path)}")
        raise CacheError(f"{cache_path}: {len(missing)} segment file(s) missing from {folder} (first: {missing[0]}); "
                         "the cache file and its .shards folder must be kept together; restore the folder "
                         "or re-extract into a new cache=")
