"""What protects each part of a cache from bytes that change on disk, and the checks that read it.

- The cache file is *sealed*: it starts with a 512-byte HDF5 user block (which every HDF5 reader
  skips) holding the SHA-256 of every byte after it. Readers and writers check the seal before HDF5
  parses a byte, so a damaged cache file (attributes, class names, failures, segment table, the
  virtual datasets' mapping) is refused, never read, and never parsed by HDF5 (which can crash on
  damaged metadata). The file is small: O(segments + live ranges + failures).
- A segment (and a packed file) is written with HDF5's 1.10 metadata, which carries checksums on its
  superblock, object headers and chunk indexes; every per-row dataset of fixed width (labels,
  keys, splits, stat, views, codes) is chunked with a fletcher32 checksum per chunk, so a changed
  byte fails the read, through the cache file's virtual datasets too; ``paths_crc32`` holds each
  row's CRC-32 of its UTF-8 path (paths are variable-length strings, stored where HDF5 keeps no
  checksum), checked by every reader of paths; the small tables a writer reads from a segment
  (attributes, class names, failures, moved paths) are covered by ``tables_sha256``.
- A segment's ``digest`` (over its tables and every per-row dataset) is listed beside its name in
  the cache file (``/segments/digests``): a segment file swapped for another (another cache's, or
  an older one of the same name) is refused by readers and writers before a row is read.
- The lock and lease files hold no data: their bytes are never trusted (a pid for messages).

Files written before these existed (schema 2 as first released, schema 1) lack them and are read
as before; the first extract into such a cache writes its new segments with them.
"""
import hashlib
import json
import os
import zlib

import h5py
import numpy as np

from .errors import CacheError

USERBLOCK = 512
SEAL = b"CNNCODES-SHA256:"                  # then 64 hex digits and a newline
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
LIBVER = ("v110", "v110")                   # checksummed metadata; readable by HDF5 1.10 and later
TABLES_DIGEST = "tables_sha256"             # a segment's or packed file's small tables
ROWS_DIGEST = "digest"                      # a segment's identity: its tables and per-row datasets
PATHS_CRC = "paths_crc32"                   # per row: CRC-32 of the UTF-8 path
ROW_CHUNK_ROWS = 4096                       # rows per chunk of the small per-row datasets
DIGESTS = "digests"                         # /segments/digests in the cache file
# Per-row datasets whose bytes the rows digest covers, in this order (those present).
DIGESTED_ROWS = ("labels", "paths", PATHS_CRC, "keys", "splits", "stat", "views")
TABLE_GROUPS = ("failed",)                  # groups whose datasets are tables
TABLE_DATASETS = ("class_names", "moved_from")


# --- the cache file's seal ------------------------------------------------------------------------
def _seal_block(hex_digest: bytes) -> bytes:
    head = SEAL + hex_digest + b"\n"
    return head + bytes(USERBLOCK - len(head))


def seal(image) -> None:
    """Write the seal into ``image`` (the whole file, a writable buffer whose first USERBLOCK bytes
    are the user block, empty)."""
    view = memoryview(image)
    view[:USERBLOCK] = _seal_block(hashlib.sha256(view[USERBLOCK:]).hexdigest().encode())


def open_sealed(path, what="cache file"):
    """The cache file opened with h5py once its bytes pass the seal; a file written before seals
    (HDF5 signature at byte 0) opens as it is. Raises CacheError (one line) for a damaged file."""
    path = os.fspath(path)
    for _ in range(3):  # a writer may rename a new version between the check and the open: check again
        try:
            with open(path, "rb") as f:
                head = f.read(USERBLOCK + len(HDF5_SIGNATURE))
                info = os.fstat(f.fileno())
                if head[:len(HDF5_SIGNATURE)] != HDF5_SIGNATURE:
                    if head[USERBLOCK:] != HDF5_SIGNATURE or not head.startswith(SEAL):
                        raise damaged(path, what, "its first bytes are neither HDF5's nor a cnncodes seal")
                    digest = hashlib.sha256(head[USERBLOCK:])
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                    if head[:USERBLOCK] != _seal_block(digest.hexdigest().encode()):  # the rest of the block: zeros
                        raise damaged(path, what, "its bytes do not match its SHA-256 seal")
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise damaged(path, what, exc) from None
        try:
            h5 = h5py.File(path, "r")
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001  (HDF5 names damage in many ways)
            raise damaged(path, what, exc) from None
        try:
            opened = os.fstat(h5.id.get_vfd_handle())
            same = (opened.st_dev, opened.st_ino) == (info.st_dev, info.st_ino)
        except Exception:  # noqa: BLE001  (a driver without a descriptor: trust the path)
            same = True
        if same:
            return h5
        h5.close()
    raise CacheError(f"{path}: the {what} kept changing while it was opened; try again")


def is_sealed(h5file) -> bool:
    return h5file.userblock_size >= USERBLOCK


def damaged(path, what, why) -> CacheError:
    """The one line a damaged part of a cache is refused with."""
    why = str(why).strip().replace("\n", " ")
    return CacheError(f"{path}: the {what} is damaged ({why}); run `cnncodes verify` on the cache, and "
                      "restore it from a copy or re-extract into a new cache=")


# --- tables and rows digests (segments, packed files) -----------------------------------------------
def _text(value):
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def _plain(value):
    if isinstance(value, bytes):
        return _text(value)
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value != value:
        return "NaN"
    return value


def tables_digest(f) -> str:
    """SHA-256 of a segment's or packed file's small tables: its attributes (but the digests), class
    names, failures and moved paths, as read back."""
    attrs = {k: _plain(v) for k, v in f.attrs.items() if k not in (TABLES_DIGEST, ROWS_DIGEST)}
    tables = {"attrs": attrs}
    for name in TABLE_DATASETS:
        if name in f:
            tables[name] = _plain(f[name][()])
    for group in TABLE_GROUPS:
        if group in f:
            tables[group] = {name: _plain(f[group][name][()]) for name in sorted(f[group])}
    data = json.dumps(tables, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8", "surrogateescape")
    return hashlib.sha256(data).hexdigest()


def rows_digest(f, tables: str) -> str:
    """A segment's identity: SHA-256 of its tables' digest and its per-row datasets' bytes."""
    digest = hashlib.sha256(tables.encode())
    for name in DIGESTED_ROWS:
        if name not in f:
            continue
        data = f[name][()]
        digest.update(name.encode() + b"\0")
        if data.dtype.kind == "O":
            digest.update(b"\0".join(_text(v).encode("utf-8", "surrogateescape") for v in data.tolist()) + b"\1")
        else:
            digest.update(np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


def stamp(f) -> tuple:
    """Write a file's digests as attributes (after everything else); returns (tables, rows)."""
    tables = tables_digest(f)
    rows = rows_digest(f, tables)
    f.attrs[TABLES_DIGEST] = np.bytes_(tables)
    f.attrs[ROWS_DIGEST] = np.bytes_(rows)
    return tables, rows


def stored_digest(f, name):
    """A digest attribute: on the root (a segment), or for the tables of a packed file, whose root
    attributes are the cache's own, on /class_names."""
    value = f.attrs.get(name)
    if value is None and name == TABLES_DIGEST and "class_names" in f:
        value = f["class_names"].attrs.get(name)
    return None if value is None else _text(value)


def check_tables(f, path, what) -> None:
    """A segment's or packed file's small tables against their digest (files without one pass)."""
    stored = stored_digest(f, TABLES_DIGEST)
    if stored is not None and stored != tables_digest(f):
        raise damaged(path, what, "its attributes, class names or failures do not match their SHA-256")


# --- paths ------------------------------------------------------------------------------------------
def paths_crc(paths) -> np.ndarray:
    """CRC-32 of each path's UTF-8 bytes (str or bytes)."""
    return np.fromiter((zlib.crc32(p if isinstance(p, bytes) else p.encode("utf-8", "surrogateescape"))
                        for p in paths), dtype=np.uint32, count=len(paths))


def check_paths(paths, crcs, path, what, start=0) -> None:
    """Raise (one line) where a path read does not match its stored CRC-32."""
    bad = np.flatnonzero(paths_crc(paths) != np.asarray(crcs, dtype=np.uint32))
    if len(bad):
        raise damaged(path, what, f"the path of row {start + int(bad[0])} does not match its CRC-32")


def row_options(n, tail=()) -> dict:
    """Chunked with a fletcher32 checksum: how every fixed-width per-row dataset is stored."""
    return dict(chunks=(max(1, min(ROW_CHUNK_ROWS, n)),) + tuple(tail), maxshape=(None,) + tuple(tail),
                fletcher32=True)
