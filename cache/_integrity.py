"""What protects each part of a cache from bytes that change on disk, and the checks that read it.

- The cache file is *sealed*: it starts with a 512-byte HDF5 user block (which every HDF5 reader
  skips) holding the SHA-256 of every byte after it. Readers and writers check the seal before HDF5
  parses a byte, so a damaged cache file (attributes, class names, failures, segment table, the
  virtual datasets' mapping) is refused, never read, and never parsed by HDF5 (which can crash on
  damaged metadata). The file is small: O(segments + live ranges + failures).
- A segment (and a packed file) is written with HDF5's 1.10 metadata, which carries checksums on its
  superblock, object headers and chunk indexes; every per-row dataset (labels, paths, keys,
  splits, stat, views, codes) is chunked with a fletcher32 checksum per chunk, so a changed byte
  fails the read, through the cache file's virtual datasets too. A segment holds no
  variable-length string: its paths, class names, failures, moved paths and attributes are
  fixed-width UTF-8 (the cache file's /paths stays variable-length: HDF5 converts on read), because
  HDF5 keeps variable-length data in a "global heap" with no checksum, and reading a damaged one
  can hang HDF5 for ever (found by the damage trials). The small tables a writer reads from a
  segment (attributes, class names, failures, moved paths) are covered by ``tables_sha256``.
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

import h5py
import numpy as np

from .errors import CacheError

USERBLOCK = 512
SEAL = b"CNNCODES-SHA256:"                  # then 64 hex digits and a newline
HEAPS = b"CNNCODES-HEAPS-SHA256:"           # a packed file: the digest of its heaps, then their byte ranges
HEAPS_USERBLOCK = 4096
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
LIBVER = ("v110", "v110")                   # checksummed metadata; readable by HDF5 1.10 and later
TABLES_DIGEST = "tables_sha256"             # a segment's or packed file's small tables
ROWS_DIGEST = "digest"                      # a segment's identity: its tables and per-row datasets
ROW_CHUNK_ROWS = 4096                       # rows per chunk of the small per-row datasets
DIGESTS = "digests"                         # /segments/digests in the cache file
# Per-row datasets whose bytes the rows digest covers, in this order (those present).
DIGESTED_ROWS = ("labels", "paths", "keys", "splits", "stat", "views")
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
    """The cache file opened with h5py once its bytes pass the seal (or, for a packed file, its heaps
    pass theirs); a file written before seals (HDF5 signature at byte 0) opens as it is. Raises
    CacheError (one line) for a damaged file."""
    path = os.fspath(path)
    for _ in range(3):  # a writer may rename a new version between the check and the open: check again
        try:
            with open(path, "rb") as f:
                head = f.read(HEAPS_USERBLOCK + len(HDF5_SIGNATURE))
                info = os.fstat(f.fileno())
                if head.startswith(HEAPS):
                    _check_heaps(f, head, path, what)
                elif head[:len(HDF5_SIGNATURE)] != HDF5_SIGNATURE:
                    if head[USERBLOCK:USERBLOCK + len(HDF5_SIGNATURE)] != HDF5_SIGNATURE or not head.startswith(SEAL):
                        raise damaged(path, what, "its first bytes are neither HDF5's nor a cnncodes seal")
                    f.seek(USERBLOCK)
                    digest = hashlib.sha256()
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


# --- a packed file's heaps ----------------------------------------------------------------------------
# A packed file keeps the cache file's variable-length strings (paths, class names, failures,
# attributes: what plain h5py reads from a cache file), which HDF5 stores in global heap collections
# with no checksum; a damaged one can hang HDF5. The file is too large to hash at every open, but its
# heaps (and the raw heap references of its variable-length datasets) are small: their byte ranges
# and SHA-256 are written in the user block, and checked before HDF5 reads a byte of them.
def heap_ranges(path) -> list:
    """[offset, length] of a file's global heap collections and variable-length datasets' storage, merged."""
    import re
    import struct
    ranges = []
    total = os.path.getsize(path)
    with open(path, "rb") as f:  # streamed: a packed file may be large
        at, tail = 0, b""
        for block in iter(lambda: f.read(64 << 20), b""):
            data = tail + block
            base = at - len(tail)
            for match in re.finditer(b"GCOL\x01\x00\x00\x00", data):
                if match.start() + 16 <= len(data):
                    (size,) = struct.unpack("<Q", data[match.start() + 8:match.start() + 16])
                    if 4096 <= size <= total - (base + match.start()):
                        ranges.append([base + match.start(), size])
            at += len(block)
            tail = data[-15:]
    with h5py.File(path, "r") as h5:
        def visit(_, obj):
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "O" and obj.id.get_offset() is not None:
                ranges.append([obj.id.get_offset(), obj.id.get_storage_size()])  # absolute: user block included
        h5.visititems(visit)
    merged = []
    for start, size in sorted(r for r in ranges if r[1] > 0):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], start + size - merged[-1][0])
        else:
            merged.append([start, size])
    return merged


def _heaps_block(digest: bytes, ranges) -> bytes:
    listed = ",".join(f"{a}:{b}" for a, b in ranges).encode()
    block = HEAPS + digest + b"\n" + listed + b"\n"
    return block + bytes(HEAPS_USERBLOCK - len(block))


def _heaps_digest(f, ranges, listed: bytes) -> bytes:
    digest = hashlib.sha256(listed)
    for start, size in ranges:
        f.seek(start)
        digest.update(f.read(size))
    return digest.hexdigest().encode()


def seal_heaps(path) -> None:
    """Write a packed file's heap seal into its user block (the file made with HEAPS_USERBLOCK)."""
    ranges = heap_ranges(path)
    while len(_heaps_block(b"0" * 64, ranges).rstrip(b"\0")) > HEAPS_USERBLOCK - 1:  # too many: merge the closest
        gaps = [ranges[i + 1][0] - (ranges[i][0] + ranges[i][1]) for i in range(len(ranges) - 1)]
        i = gaps.index(min(gaps))
        ranges[i:i + 2] = [[ranges[i][0], ranges[i + 1][0] + ranges[i + 1][1] - ranges[i][0]]]
    listed = ",".join(f"{a}:{b}" for a, b in ranges).encode()
    with open(path, "r+b") as f:
        digest = _heaps_digest(f, ranges, listed)
        f.seek(0)
        f.write(_heaps_block(digest, ranges))
        f.flush()
        os.fsync(f.fileno())


def _check_heaps(f, head, path, what) -> None:
    try:
        digest, listed = head[len(HEAPS):HEAPS_USERBLOCK].split(b"\n")[:2]
        ranges = [[int(a), int(b)] for a, b in (r.split(b":") for r in listed.split(b","))] if listed else []
    except ValueError:
        raise damaged(path, what, "its user block is not a cnncodes heap seal") from None
    size = os.fstat(f.fileno()).st_size
    if head[:HEAPS_USERBLOCK] != _heaps_block(digest, ranges) or any(a + b > size for a, b in ranges) \
            or head[HEAPS_USERBLOCK:] != HDF5_SIGNATURE or _heaps_digest(f, ranges, listed) != digest:
        raise damaged(path, what, "its strings' heaps do not match their SHA-256 seal")


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


def tables_digest(f, written=None) -> str:
    """SHA-256 of a segment's or packed file's small tables: its attributes (but the digests), class
    names, failures and moved paths, as read back. ``written``: the tables' datasets just written to
    ``f`` ({name: array} and {group: {name: array}}, every one present), used instead of reading them
    back (the attributes are read back: HDF5 writes a file whose attributes were read differently)."""
    attrs = {k: _plain(v) for k, v in f.attrs.items() if k not in (TABLES_DIGEST, ROWS_DIGEST)}
    tables = {"attrs": attrs}
    if written is not None:
        for name, value in written.items():
            tables[name] = {k: _plain(v) for k, v in sorted(value.items())} if isinstance(value, dict) else _plain(value)
        data = json.dumps(tables, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8", "surrogateescape")
        return hashlib.sha256(data).hexdigest()
    for name in TABLE_DATASETS:
        if name in f:
            tables[name] = _plain(f[name][()])
    for group in TABLE_GROUPS:
        if group in f:
            tables[group] = {name: _plain(f[group][name][()]) for name in sorted(f[group])}
    data = json.dumps(tables, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8", "surrogateescape")
    return hashlib.sha256(data).hexdigest()


def rows_digest(f, tables: str, written=None) -> str:
    """A segment's identity: SHA-256 of its tables' digest and its per-row datasets' bytes. ``written``:
    the arrays just written to those datasets (name -> array), whose bytes are the stored ones: used
    instead of reading them back."""
    digest = hashlib.sha256(tables.encode())
    for name in DIGESTED_ROWS:
        if name not in f:
            continue
        data = written[name] if written is not None and name in written else f[name][()]
        digest.update(name.encode() + b"\0")
        if data.dtype.kind == "O":
            digest.update(b"\0".join(_text(v).encode("utf-8", "surrogateescape") for v in data.tolist()) + b"\1")
        else:
            digest.update(np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


def stamp(f, written=None, written_tables=None) -> tuple:
    """Write a file's digests as attributes (after everything else); returns (tables, rows).
    ``written``: as rows_digest takes it; ``written_tables``: as tables_digest takes it."""
    tables = tables_digest(f, written_tables)
    rows = rows_digest(f, tables, written)
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


# --- fixed-width storage (no global heap) ------------------------------------------------------------
def fixed_utf8(values) -> np.ndarray:
    """Strings as a fixed-width UTF-8 array (h5py stores it in the dataset itself, with no heap)."""
    encoded = [v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogateescape") for v in values]
    width = max([1] + [len(v) for v in encoded])
    return np.array(encoded, dtype=h5py.string_dtype("utf-8", width)).reshape(len(encoded))


def fixed_attr(value):
    """An attribute value with no variable-length string in it (stored in the object header, checksummed)."""
    if isinstance(value, dict):
        value = json.dumps(value, sort_keys=True)
    if isinstance(value, (list, tuple)):
        return fixed_utf8([str(v) for v in value])
    if isinstance(value, str):
        return np.bytes_(value.encode("utf-8", "surrogateescape"))
    return value


def write_fixed_attrs(h5file, attrs: dict) -> None:
    for key, value in attrs.items():
        if value is not None:
            h5file.attrs[key] = fixed_attr(value)


def row_options(n, tail=(), compress=False) -> dict:
    """Chunked with a fletcher32 checksum: how every per-row dataset is stored (paths compressed too:
    fixed-width, each as wide as the longest)."""
    options = dict(chunks=(max(1, min(ROW_CHUNK_ROWS, n)),) + tuple(tail), maxshape=(None,) + tuple(tail),
                   fletcher32=True)
    if compress:
        options.update(compression="gzip", compression_opts=1)
    return options
