"""The codes written as raw chunks (cache/_chunks.py) are the bytes HDF5's own write stored (issue 50).

- the fletcher32 checksum computed here (HDF5's library function where h5py's library exports it, and
  the vectorised numpy one) equals HDF5's: a transcription of H5_checksum_fletcher32, and the
  checksums h5py stores in chunks, odd lengths and 360-word blocks included;
- a segment's file written with the chunks made here is byte for byte the file h5py's own write made,
  for shards and for merges (aligned chunks copied as stored, holes, a last partial chunk, rows fewer
  than a chunk), and h5py reads it back with its checksums checked;
- a damaged chunk in a merge's source still fails the merge, as HDF5's read did.
"""
import io
import os

import h5py
import numpy as np
import pytest

from cnncodes.cache import _chunks, _segments
from cnncodes.cache._chunks import fletcher32, fletcher32_numpy
from cnncodes.cache._integrity import LIBVER, stamp
from cnncodes.cache._segments import SegmentRows, read_merge_rows, write_segment
from cnncodes.cache.errors import CacheError
from cnncodes.cache.schema import CODES_GROUP


def hdf5_fletcher32(data: bytes) -> int:
    """H5_checksum_fletcher32 (HDF5's H5checksum.c), transcribed: 16-bit big-endian words, both sums
    folded every 360 words, an odd last byte as a word's high byte, then one more fold each."""
    def fold(x):
        return (x & 0xFFFF) + (x >> 16)
    words, at, sum1, sum2 = len(data) // 2, 0, 0, 0
    while words:
        block = min(words, 360)
        words -= block
        for _ in range(block):
            sum1 += (data[at] << 8) | data[at + 1]
            at += 2
            sum2 += sum1
        sum1, sum2 = fold(sum1), fold(sum2)
    if len(data) % 2:
        sum1 += data[at] << 8
        sum2 += sum1
        sum1, sum2 = fold(sum1), fold(sum2)
    return (fold(sum2) << 16) | fold(sum1)


def _samples():
    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 3, 718, 719, 720, 721, 722, 1439, 1440, 1441, 4099, 20001):
        yield rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        yield b"\xff" * n      # the largest sums: every fold carries
        yield b"\x00" * n
        yield bytes([0xFF, 0xFE]) * (n // 2) + b"\x01" * (n % 2)


@pytest.mark.parametrize("data", list(_samples()), ids=lambda d: f"{len(d)}B-{d[:1].hex() or 'empty'}")
def test_the_checksum_is_hdf5s(data):
    want = hdf5_fletcher32(data)
    assert fletcher32_numpy(data) == want
    assert fletcher32(data) == want


def test_the_folds_shortcut_falls_back_where_it_may_not_hold():
    # sums whose low 16 bits come out 0 after a sum above 65535: the one case the vectorised folds
    # compute one by one
    rng = np.random.default_rng(3)
    for _ in range(200):
        adds = rng.choice([65536, 65535, 131072, 1, 0, 65537, 4_000_000_000, 65536 * 300], size=50)
        adds = adds.astype(np.int64)
        want, value = [], 0
        for a in adds.tolist():
            value = (value + a & 0xFFFF) + (value + a >> 16)
            want.append(value)
        assert _chunks._folded_sums(adds).tolist() == want


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float16, np.float32])
@pytest.mark.parametrize("shape,chunks", [((13, 7), (5, 7)), ((300, 3), (256, 3)), ((1, 1), (1, 1))])
def test_the_checksum_is_the_one_h5py_stores(dtype, shape, chunks):
    data = (np.arange(np.prod(shape)) * 2654435761 % 65521).astype(dtype).reshape(shape)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", libver=LIBVER) as f:
        dataset = f.create_dataset("x", data=data, chunks=chunks, fletcher32=True)
        f.flush()  # chunks still in HDF5's chunk cache have no stored bytes yet
        for start in range(0, shape[0], chunks[0]):
            _, stored = dataset.id.read_direct_chunk((start, 0))
            body, checksum = stored[:-4], int.from_bytes(stored[-4:], "little")
            assert len(body) == np.prod(chunks) * np.dtype(dtype).itemsize  # odd for uint8 7-wide chunks
            assert fletcher32_numpy(body) == checksum == fletcher32(body)


def _file_bytes(write):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", libver=LIBVER) as f:
        write(f.create_group(CODES_GROUP))
    return buffer.getvalue()


@pytest.mark.parametrize("n", [0, 1, 255, 256, 257, 512, 700])
@pytest.mark.parametrize("dtype,width", [(np.float16, 4096), (np.float16, 3), (np.float32, 5)])
def test_codes_written_as_chunks_are_h5pys_bytes(n, dtype, width):
    rng = np.random.default_rng(n)
    codes = rng.standard_normal((n, width)).astype(dtype)
    parts = np.array_split(codes, [32, 33, 100, 300]) if n else []  # batches, as extract adds them
    chunk_rows = max(1, min(256, n))

    def h5pys(group):
        group.create_dataset("fc7", data=codes, chunks=(chunk_rows, width), maxshape=(None, width), fletcher32=True)

    kept = {}

    def ours(group, keep=True):
        kept[keep] = _chunks.write_codes(group, "fc7", list(parts), n, width, np.dtype(dtype), 256, keep=keep)
    ours_bytes = _file_bytes(ours)
    assert ours_bytes == _file_bytes(h5pys)
    # one buffer reused for every chunk (a segment too large to remember its chunks): the same bytes
    assert _file_bytes(lambda group: ours(group, keep=False)) == ours_bytes
    assert kept[False] == [] and len(kept[True]) == -(-n // chunk_rows)
    with h5py.File(io.BytesIO(ours_bytes), "r") as f:
        dataset = f[CODES_GROUP]["fc7"]
        assert dataset.fletcher32 and dataset.chunks == (chunk_rows, width)
        assert np.array_equal(dataset[()].view(np.uint8), codes.view(np.uint8))  # read with checksums checked


def _rows(n, start, width, classes=("ant", "bee"), views=False):
    rng = np.random.default_rng(start)
    codes = rng.standard_normal((n, width)).astype(np.float16)
    return SegmentRows(
        paths=[f"{classes[i % len(classes)]}/img{start + i}.jpg" for i in range(n)],
        keys=["%064x" % (start + i) for i in range(n)], splits=[("train", "val", "test")[i % 3] for i in range(n)],
        classes=[classes[i % len(classes)] for i in range(n)],
        stats=[(1000 + i, 1_600_000_000_000_000_000 + i, 77 + i) for i in range(n)],
        views=[i % 3 if views else 0 for i in range(n)],
        codes={"fc7": list(np.array_split(codes, [32, 64])) if n > 64 else [codes]})


def h5py_write_codes(group, name, parts, n, width, dtype, chunk_rows, keep=True):
    """The write before issue 50's cut: h5py's create_dataset with the rows, HDF5 computing the checksums."""
    parts = [np.asarray(p, dtype=dtype) for p in parts]
    data = np.concatenate(parts).reshape(n, width) if parts else np.zeros((0, width), dtype)
    group.create_dataset(name, data=data, chunks=(max(1, min(chunk_rows, n)), width),
                         maxshape=(None, width), fletcher32=True)
    return []


def h5py_copy_codes(dataset, lo, hi, at, merged, total, width, stored_rows):
    """The merge's read before the cut: every row through HDF5."""
    dataset.read_direct(merged.rows, np.s_[lo:hi], np.s_[at:at + hi - lo])


ATTRS = {"backbone": "toy", "kind": "merged", "seq": 9, "dtype": "float16", "created": "2026-12-06T00:00:00"}

# (rows of each source segment, live ranges of each): aligned shards, a last partial chunk, holes,
# sources smaller than a chunk, a source whose partial chunk lands inside the merged segment
MERGES = {
    "aligned": ([512, 512], [[(0, 512)], [(0, 512)]]),
    "last partial": ([1024, 464], [[(0, 1024)], [(0, 464)]]),
    "partial inside": ([464, 512], [[(0, 464)], [(0, 512)]]),
    "holes": ([512, 512], [[(0, 100), (101, 512)], [(0, 512)]]),
    "head cut": ([768, 512], [[(256, 768)], [(0, 512)]]),
    "tail cut": ([768, 512], [[(0, 700)], [(0, 512)]]),
    "small": ([100, 60], [[(0, 100)], [(0, 60)]]),
    "one source rewritten": ([900], [[(0, 256), (300, 900)]]),
}


@pytest.mark.parametrize("views", [False, True])
@pytest.mark.parametrize("case", list(MERGES))
def test_segments_are_the_bytes_h5pys_write_made(tmp_path, monkeypatch, case, views):
    sizes, ranges = MERGES[case]
    attrs = dict(ATTRS, views='{"count": 2}') if views else ATTRS
    widths, dtype = {"fc7": 4096}, np.dtype(np.float16)
    written = {}
    for way in ("h5py", "chunks", "chunks remembered"):
        folder = tmp_path / way
        folder.mkdir()
        monkeypatch.undo()
        if way == "h5py":  # the write and the merge before issue 50's cut
            monkeypatch.setattr(_segments, "write_codes", h5py_write_codes)
            monkeypatch.setattr(_segments, "_copy_codes", h5py_copy_codes)
            monkeypatch.setattr(_segments, "stamp", lambda f, *written: stamp(f))  # every digest read back
        if way != "chunks remembered":  # the merge reads its sources from their files
            monkeypatch.setattr(_segments, "WRITTEN_MEMORY", 0)
        sources, digests = [], {}
        for i, size in enumerate(sizes):
            path = str(folder / f"seg-0000000{i + 1}.h5")
            digests[path] = write_segment(path, dict(attrs, kind="shard"), ["ant", "bee"],
                                          _rows(size, 1000 * i, 4096, views=views), widths, dtype)
            sources.append((path, ranges[i]))
        merged = read_merge_rows(sources, widths, ["ant", "bee", "cat"], dtype, digests)
        write_segment(str(folder / "merged.h5"), attrs, ["ant", "bee", "cat"], merged, widths, dtype)
        # a second merge of the same tables' shape (HDF5 wrote its attribute index differently once read)
        merged = read_merge_rows(sources, widths, ["ant", "bee", "cat"], dtype, digests)
        write_segment(str(folder / "merged-again.h5"), attrs, ["ant", "bee", "cat"], merged, widths, dtype)
        written[way] = {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}
    assert written["chunks"] == written["h5py"]  # every file, byte for byte
    assert written["chunks remembered"] == written["h5py"]
    with h5py.File(tmp_path / "chunks" / "merged.h5", "r") as f, \
            h5py.File(tmp_path / "h5py" / "seg-00000001.h5", "r") as first:
        codes = f[CODES_GROUP]["fc7"][()]  # read with the checksums checked
        a, b = ranges[0][0]
        assert np.array_equal(codes[:b - a].view(np.uint16), first[CODES_GROUP]["fc7"][a:b].view(np.uint16))


def test_merges_take_aligned_chunks_as_stored(tmp_path, monkeypatch):
    monkeypatch.setattr(_segments, "WRITTEN_MEMORY", 0)  # read from the files
    taken = []
    real = _chunks.read_checked_chunk
    monkeypatch.setattr(_segments, "read_checked_chunk", lambda *a: taken.append(a[1]) or real(*a))
    widths, dtype = {"fc7": 4096}, np.dtype(np.float16)
    paths = [str(tmp_path / f"seg-0000000{i}.h5") for i in (1, 2)]
    for i, (path, size) in enumerate(zip(paths, (512, 300))):
        write_segment(path, ATTRS, ["ant", "bee"], _rows(size, 1000 * i, 4096), widths, dtype)
    merged = read_merge_rows([(paths[0], [(0, 512)]), (paths[1], [(0, 300)])], widths, ["ant", "bee"], dtype)
    assert sorted(merged.codes["fc7"][0].raw) == [0, 256, 512, 768]  # 300 rows: a whole chunk, then the last
    assert taken == [0, 256, 0, 256]


def test_a_damaged_chunk_fails_the_merge_as_before(tmp_path, monkeypatch):
    monkeypatch.setattr(_segments, "WRITTEN_MEMORY", 0)  # a segment another process wrote
    widths, dtype = {"fc7": 4096}, np.dtype(np.float16)
    path = str(tmp_path / "seg-00000001.h5")
    write_segment(path, ATTRS, ["ant", "bee"], _rows(512, 0, 4096), widths, dtype)
    with h5py.File(path, "r") as f:
        offset = f[CODES_GROUP]["fc7"].id.get_chunk_info(1).byte_offset
    with open(path, "r+b") as f:  # one bit of the second chunk's codes
        f.seek(offset + 1000)
        byte = f.read(1)
        f.seek(offset + 1000)
        f.write(bytes([byte[0] ^ 0x10]))
    with pytest.raises(CacheError, match="damaged"):
        read_merge_rows([(path, [(0, 512)])], widths, ["ant", "bee"], dtype)


def test_the_numpy_checksum_writes_the_same_files(tmp_path, monkeypatch):
    widths, dtype = {"fc7": 4096}, np.dtype(np.float16)
    files = {}
    for way in ("library", "numpy"):
        if way == "numpy":
            monkeypatch.setattr(_chunks, "_checksum", None)
        folder = tmp_path / way
        folder.mkdir()
        paths = [str(folder / f"seg-0000000{i}.h5") for i in (1, 2)]
        for i, (path, size) in enumerate(zip(paths, (512, 300))):
            write_segment(path, ATTRS, ["ant", "bee"], _rows(size, 1000 * i, 4096), widths, dtype)
        merged = read_merge_rows([(paths[0], [(0, 512)]), (paths[1], [(0, 300)])], widths, ["ant", "bee"], dtype)
        write_segment(str(folder / "merged.h5"), ATTRS, ["ant", "bee"], merged, widths, dtype)
        files[way] = [(folder / name).read_bytes() for name in sorted(os.listdir(folder))]
    assert files["numpy"] == files["library"]
