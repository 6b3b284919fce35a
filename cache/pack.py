"""`pack`: one self-contained HDF5 file, to move or share a cache as a single file.

A schema-2 cache is a small file plus its ``.shards`` folder; copied alone, its virtual datasets
have nothing to read. The packed file holds the same datasets, attributes and row order as plain
(non-virtual) datasets, so `info`, `fit`, `compare`, `predict`, `export` and plain h5py read it
with no folder beside it, and `extract` into it turns it back into segments. It is written under
a temporary name and renamed when complete, like every other write.
"""
import contextlib
import os

import h5py
import numpy as np

from .errors import CacheError
from ._files import fsync_dir
from ._integrity import HEAPS_USERBLOCK, LIBVER, TABLES_DIGEST, row_options, seal_heaps, tables_digest
from .reader import READ_BLOCK_ROWS, open_cache
from .schema import CLASS_NAMES, CODE_CHUNK_ROWS, CODES_GROUP, FAILED_GROUP, ROW_FIELDS, STR, VIEWS, write_attrs

SEGMENT_ATTRS = ("linked_through", "next_seq")  # the segment list's counters: meaningless without segments


def pack_cache(cache_path, out_path) -> dict:
    """Write ``out_path``; returns {"rows", "bytes"}."""
    cache_path, out_path = os.fspath(cache_path), os.fspath(out_path)
    if os.path.abspath(out_path) == os.path.abspath(cache_path):
        raise CacheError(f"{out_path}: pack writes a new file; pass out= another file than the cache itself")
    tmp = f"{out_path}.tmp"
    with open_cache(cache_path) as c:
        try:
            with h5py.File(tmp, "w", libver=LIBVER, userblock_size=HEAPS_USERBLOCK) as out:  # checksummed metadata
                attrs = {k: v for k, v in c.attrs.items() if k not in SEGMENT_ATTRS}  # the file's attributes
                write_attrs(out, dict(attrs, packed_from=os.path.abspath(cache_path)))
                out.create_dataset(CLASS_NAMES, data=c._file[CLASS_NAMES][()], dtype=c._file[CLASS_NAMES].dtype)
                names = [n for n in list(ROW_FIELDS) + [VIEWS] if n in c._file]
                names += [f"{CODES_GROUP}/{layer}" for layer in c.layers]
                for name in names:
                    _copy_rows(c.raw(name), out, name)
                c._file.copy(c._file[FAILED_GROUP], out, FAILED_GROUP)
                # the root's attributes are the cache's own: the tables' SHA-256 goes on /class_names
                out[CLASS_NAMES].attrs[TABLES_DIGEST] = np.bytes_(tables_digest(out))
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        rows = len(c)
    seal_heaps(tmp)  # its variable-length strings' heaps, checked before HDF5 reads them (cache/_integrity.py)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out_path)
    fsync_dir(os.path.dirname(os.path.abspath(out_path)))
    return {"rows": rows, "bytes": os.path.getsize(out_path)}


def _copy_rows(dset, out, name):
    """A per-row dataset copied in blocks as a plain one (codes chunked and checksummed as in segments)."""
    n, tail = dset.shape[0], dset.shape[1:]
    options = {}
    if name.startswith(f"{CODES_GROUP}/"):
        options = dict(chunks=(max(1, min(CODE_CHUNK_ROWS, n)),) + tail, maxshape=(None,) + tail, fletcher32=True)
    elif dset.dtype != STR and dset.dtype.kind != "O":  # every fixed-width per-row dataset: checksummed too
        options = row_options(n, tail)
    target = out.create_dataset(name, shape=dset.shape, dtype=dset.dtype, **options)
    for key, value in dset.attrs.items():
        target.attrs[key] = value
    for start in range(0, n, READ_BLOCK_ROWS):
        block = dset[start:start + READ_BLOCK_ROWS]
        if name.startswith(f"{CODES_GROUP}/") and not np.isfinite(block).all():
            raise CacheError(f"{dset.file.filename}: /{name} rows {start}-{start + len(block) - 1} hold NaN; "
                             f"run `cnncodes verify {dset.file.filename}` before packing")
        target[start:start + len(block)] = block
