"""Upgrading a cache whose rows are inside the one file (schema 1, or a packed cache) to segments, once, on append."""
import os

import numpy as np

from .errors import CacheError
from ._integrity import check_tables, damaged, open_sealed
from ._manifest import Manifest, publish_manifest, segment_folder
from .schema import (CLASS_NAMES, CODES_GROUP, FAILED_GROUP, LABELS, STAT, STAT_COLUMNS, VIEWS, class_of,
                     read_attrs, read_failures, read_strings)
from ._segments import MERGED, SegmentRows, segment_name, write_segment

UNKNOWN_STAT = (0, 0, 0)  # never equal to a real file's: such rows are re-hashed (not re-encoded) once


def migrate_schema1(cache_path, seq: int) -> None:
    """Copy a schema-1 cache's rows into one segment and replace the file by a schema-2 one.

    The old file stays in place until the new one is renamed over it, so a kill changes nothing.
    """
    try:
        attrs, names, rows, widths, failures = _read_whole(cache_path)
    except CacheError:
        raise
    except Exception as exc:  # noqa: BLE001  (HDF5 names damage in many ways)
        raise damaged(cache_path, "cache file", exc) from None
    n = len(rows.paths)
    name = segment_name(seq)
    attrs.pop("packed_from", None)
    attrs.update(widths=widths, linked_through=seq, next_seq=seq + 1)
    digest = ""
    if n:
        os.makedirs(segment_folder(cache_path), exist_ok=True)
        digest = write_segment(os.path.join(segment_folder(cache_path), name), dict(attrs, kind=MERGED, seq=seq), names,
                               rows, widths, np.dtype(attrs.get("dtype", "float16")))
    manifest = Manifest(attrs, names, {name: n} if n else {}, [[name, 0, n]] if n else [], failures,
                        {name: digest} if n else {})
    publish_manifest(cache_path, manifest)


def _read_whole(cache_path):
    """A schema-1 or packed file's rows, tables and codes, each read checked (cache/_integrity.py)."""
    with open_sealed(cache_path) as f:
        check_tables(f, cache_path, "cache file")
        attrs = read_attrs(f)
        names = read_strings(f[CLASS_NAMES])
        rows = SegmentRows(paths=read_strings(f["paths"]), keys=read_strings(f["keys"]),
                           splits=read_strings(f["splits"]), classes=class_of(f[LABELS][()], names))
        # (class_of: an unlabeled row's -2 is no index; names[-2] gave it another row's class)
        # A packed cache (cache/pack.py) keeps its stat data and views; a schema-1 file has neither.
        rows.stats = [tuple(int(v) for v in s) for s in f[STAT][()]] if STAT in f else [UNKNOWN_STAT] * len(rows.paths)
        rows.views = f[VIEWS][()].tolist() if VIEWS in f else [0] * len(rows.paths)
        widths = {layer: int(f[CODES_GROUP][layer].shape[1]) for layer in attrs["layers"]}
        rows.codes = {layer: [f[CODES_GROUP][layer][()]] for layer in widths}
        failures = {p: (k, r, s) for p, k, r, s in read_failures(f[FAILED_GROUP])}
        if any(np.isnan(part).any() for parts in rows.codes.values() for part in parts):
            raise damaged(cache_path, "cache file", "its codes hold NaN")
    return attrs, names, rows, widths, failures


assert len(UNKNOWN_STAT) == len(STAT_COLUMNS)
