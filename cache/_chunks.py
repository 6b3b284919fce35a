"""A segment's codes as raw chunks: HDF5's fletcher32 filter done here, the same bytes on disk.

Every codes dataset is chunked (CODE_CHUNK_ROWS rows a chunk) with HDF5's fletcher32 filter alone. A
stored chunk is then the chunk's bytes (an edge chunk padded with zeros to a whole chunk) followed by
HDF5's ``H5_checksum_fletcher32`` of them, little-endian. Writing those bytes with
``write_direct_chunk`` gives the very file HDF5's own write gives (tests/test_writer_chunks.py checks
it byte for byte), with fewer copies; and a merge copies a source chunk that lands whole on a chunk of
the merged segment as it is stored, its checksum checked here, instead of decoding it and computing the
checksum again. Anything else (another filter, another chunk shape, rows that do not line up, a
checksum that does not match) goes through HDF5 as before, so a damaged chunk fails as it always did.

The checksum is HDF5's own function where the library h5py loaded exports it (ctypes; the call
releases the GIL), else the vectorised numpy one below, which computes the same value (HDF5's
360-word blocks and their folds, an odd length's last byte).
"""
import ctypes
import os

import h5py
import numpy as np

_FOLD_WORDS = 360  # HDF5 folds its two sums every 360 16-bit words (the most that cannot overflow)
FLETCHER32 = h5py.h5z.FILTER_FLETCHER32


# --- the checksum -------------------------------------------------------------------------------------
def _fold(x):
    return (x & 0xFFFF) + (x >> 16)


def _canonical(x):
    """x mod 65535 as HDF5's folds leave a positive sum: in 1..65535 (0 only for 0)."""
    return np.where(x > 0, (x - 1) % 65535 + 1, 0)


def _folded_sums(adds):
    """Each s_k of s_{k+1} = fold(s_k + adds_k), s_0 = 0 (int64 arrays), vectorised.

    A fold keeps the residue mod 65535 and leaves a value in 1..131070; assuming each earlier sum was
    the residue's canonical value (1..65535) gives the right fold, because fold(y + 65535) ==
    fold(y) unless y's low 16 bits are all 0. Where that case meets an earlier sum above 65535, the
    sums from there on are computed one by one."""
    assumed = np.concatenate(([0], _canonical(np.cumsum(adds))[:-1])) + adds
    sums = _fold(assumed)
    above = sums > 65535
    exception = np.concatenate(([False], above[:-1])) & ((assumed & 0xFFFF) == 0)
    if exception.any():
        start = int(np.argmax(exception))
        value = int(sums[start - 1]) if start else 0
        for k in range(start, len(adds)):
            value = int(_fold(value + int(adds[k])))
            sums[k] = value
    return sums


def fletcher32_numpy(data) -> int:
    """HDF5's H5_checksum_fletcher32 of ``data`` (any buffer), vectorised."""
    raw = np.frombuffer(memoryview(data).cast("B"), np.uint8)
    words = raw.size // 2
    full = words // _FOLD_WORDS
    adds1, adds2, lengths = [], [], []
    if full:
        block = raw[:full * 2 * _FOLD_WORDS].view(">u2").reshape(full, _FOLD_WORDS).astype(np.uint32)
        adds1.append(block.sum(axis=1, dtype=np.int64))
        block *= np.arange(_FOLD_WORDS, 0, -1, dtype=np.uint32)  # < 2**25 each
        adds2.append(block.sum(axis=1, dtype=np.int64))
        lengths.append(np.full(full, _FOLD_WORDS, np.int64))
    rest = words - full * _FOLD_WORDS
    if rest:
        tail = raw[full * 2 * _FOLD_WORDS:2 * words].view(">u2").astype(np.int64)
        adds1.append(np.array([tail.sum()]))
        adds2.append(np.array([(tail * np.arange(rest, 0, -1)).sum()]))
        lengths.append(np.array([rest]))
    if raw.size % 2:  # an odd length: the last byte as a word's high byte, folded on its own
        adds1.append(np.array([int(raw[-1]) << 8]))
        adds2.append(np.array([int(raw[-1]) << 8]))
        lengths.append(np.array([1]))
    if not adds1:
        return 0
    adds1, adds2, lengths = (np.concatenate(a).astype(np.int64) for a in (adds1, adds2, lengths))
    sum1 = _folded_sums(adds1)
    # within a block sum2 gains sum1 after each word: the block's length times sum1 before it, plus
    # each word times how many of the block's words it precedes (itself included)
    sum2 = _folded_sums(lengths * np.concatenate(([0], sum1[:-1])) + adds2)
    return int((_fold(sum2[-1]) << 16) | _fold(sum1[-1]))


def _library_paths() -> list:
    """The HDF5 library h5py loaded (from the process's memory map, Linux), then any bundled with h5py."""
    paths = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                name = os.path.basename(path)
                if name.startswith("libhdf5") and not name.startswith("libhdf5_hl") and path not in paths:
                    paths.append(path)
    except OSError:
        pass
    import glob
    here = os.path.dirname(os.path.dirname(h5py.__file__))
    for pattern in ("h5py.libs/libhdf5-*", "h5py/.dylibs/libhdf5.*"):
        paths += [p for p in sorted(glob.glob(os.path.join(here, pattern))) if p not in paths]
    return paths


def _library_checksum():
    """HDF5's own H5_checksum_fletcher32 (ctypes) from the library h5py loaded, checked against the numpy
    one; or None."""
    probe = np.random.default_rng(0).integers(0, 256, 3 * 2 * _FOLD_WORDS + 7, dtype=np.uint8)
    for path in _library_paths():
        try:
            # only a library already in this process (the one h5py loaded): never a second HDF5
            function = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL).H5_checksum_fletcher32
        except (OSError, AttributeError):
            continue
        function.restype, function.argtypes = ctypes.c_uint32, [ctypes.c_void_p, ctypes.c_size_t]

        def checksum(data, function=function):
            view = np.frombuffer(memoryview(data).cast("B"), np.uint8)
            return int(function(view.ctypes.data, view.size))
        if all(checksum(probe[:n]) == fletcher32_numpy(probe[:n]) for n in (0, 1, 720, 721, probe.size)):
            return checksum
    return None


_checksum = _library_checksum() if os.environ.get("CNNCODES_NUMPY_FLETCHER32") != "1" else None


def fletcher32(data) -> int:
    """HDF5's fletcher32 checksum of ``data`` (the value its filter appends to a chunk)."""
    return _checksum(data) if _checksum is not None else fletcher32_numpy(data)


# --- chunks -------------------------------------------------------------------------------------------
def _chunk_with_checksum(rows: np.ndarray, chunk_rows: int, out=None) -> np.ndarray:
    """The stored bytes of one chunk: its rows, zeros to a whole chunk, then the checksum (little-endian).
    ``out``: the buffer to build it in (reused), else a new one."""
    size = chunk_rows * rows.itemsize * (rows.shape[1] if rows.ndim > 1 else 1)
    out = np.empty(size + 4, np.uint8) if out is None else out
    filled = rows.nbytes
    out[:filled] = np.ascontiguousarray(rows).reshape(-1).view(np.uint8)
    return _sealed(out, filled, size)


def _sealed(out, filled, size) -> np.ndarray:
    """``out`` (a chunk's buffer, its first ``filled`` bytes the rows) padded with zeros to ``size``
    bytes, its checksum in the last 4."""
    out[filled:size] = 0
    out[size:] = np.frombuffer(np.uint32(fletcher32(out[:size])).astype("<u4").tobytes(), np.uint8)
    return out


def write_codes(group, name, parts, n, width, dtype, chunk_rows, keep=True) -> list:
    """The codes dataset ``group[name]`` ([n, width], chunked with fletcher32), written chunk by chunk
    from ``parts`` (arrays of rows, in order, or one MergedCodes): the bytes HDF5's own write stores.
    Returns the stored chunks (each a uint8 array: the chunk's bytes and their checksum), in order;
    with ``keep`` False none (every chunk is built in one buffer, reused: HDF5 copies each chunk into
    the file as it is written, and a fresh buffer a chunk cost a page fault a page, most of a large
    segment's writing on a VM)."""
    chunk_rows = max(1, min(chunk_rows, n))
    dataset = group.create_dataset(name, shape=(n, width), dtype=dtype, chunks=(chunk_rows, width),
                                   maxshape=(None, width), fletcher32=True)
    chunks = []
    size = chunk_rows * width * np.dtype(dtype).itemsize
    reused = None if keep else np.empty(size + 4, np.uint8)
    if len(parts) == 1 and isinstance(parts[0], MergedCodes):
        merged = parts[0]
        for start in range(0, n, chunk_rows):
            stored = merged.raw.get(start)
            if stored is None:
                stored = _chunk_with_checksum(merged.rows[start:start + chunk_rows], chunk_rows, reused)
            _write_chunk(dataset, start, stored, chunk_rows, chunks, keep)
        return chunks
    # each part's rows copied into the chunk being built: no concatenated copy of a chunk's parts first
    out, filled, at = None, 0, 0
    for part in parts:
        data = np.ascontiguousarray(np.asarray(part, dtype=dtype).reshape(-1, width)).reshape(-1).view(np.uint8)
        while len(data):
            if out is None:
                out, filled = (reused if reused is not None else np.empty(size + 4, np.uint8)), 0
            take = min(size - filled, len(data))
            out[filled:filled + take] = data[:take]
            filled, data = filled + take, data[take:]
            if filled == size:
                at = _write_chunk(dataset, at, _sealed(out, filled, size), chunk_rows, chunks, keep)
                out = None
    if out is not None:
        at = _write_chunk(dataset, at, _sealed(out, filled, size), filled // (size // chunk_rows), chunks, keep)
    if at != n:
        raise ValueError(f"codes {name}: {at} rows given for {n}")
    return chunks


def _write_chunk(dataset, at, stored, rows, chunks, keep) -> int:
    """The chunk ``stored`` written at row ``at`` (and kept in ``chunks``); returns the next row."""
    dataset.id.write_direct_chunk((at, 0), stored)
    if keep:
        chunks.append(stored)
    return at + rows


def chunk_rows_of(stored: np.ndarray, dtype, width) -> np.ndarray:
    """A stored chunk's rows (a view of its bytes, padding included) as [chunk rows, width]."""
    return stored[:-4].view(dtype).reshape(-1, width)


class MergedCodes:
    """A merge's codes for one layer: ``rows`` ([n, width]; the rows of chunks taken raw are left
    unread), and ``raw``: output row -> a source chunk's stored bytes (checksum checked) that is the
    merged segment's chunk starting there, byte for byte."""

    def __init__(self, n, width, dtype):
        self.rows = np.empty((n, width), dtype)
        self.raw = {}

    def __len__(self):
        return len(self.rows)

    def __array__(self, dtype=None, copy=None):  # only for tests and odd callers: reads every raw chunk
        out = self.rows.copy()
        for start, stored in self.raw.items():
            chunk = np.frombuffer(stored[:-4].tobytes(), out.dtype).reshape(-1, out.shape[1])
            out[start:start + len(chunk)] = chunk[:len(out) - start]
        return out if dtype is None else out.astype(dtype)


def plain_fletcher32_chunks(dataset, chunk_rows, width) -> bool:
    """Whether ``dataset``'s stored chunks can be copied raw into a merged segment: chunks of
    ``chunk_rows`` whole rows of ``width``, fletcher32 the only filter."""
    if dataset.chunks != (chunk_rows, width):
        return False
    dcpl = dataset.id.get_create_plist()
    return dcpl.get_nfilters() == 1 and dcpl.get_filter(0)[0] == FLETCHER32


def read_checked_chunk(dataset, start, chunk_rows, width):
    """The stored bytes of ``dataset``'s chunk at row ``start``, if its fletcher32 checksum holds; else
    None (the caller reads those rows through HDF5, which reports a damaged chunk as always)."""
    size = chunk_rows * width * dataset.dtype.itemsize
    out = np.empty(size + 4, np.uint8)
    try:
        mask, _ = dataset.id.read_direct_chunk((start, 0), out=out)
    except Exception:  # noqa: BLE001  (a chunk of another size, a damaged index: HDF5's read says what)
        return None
    if mask != 0 or fletcher32(out[:size]) != int(out[size:].view("<u4")[0]):
        return None
    return out
