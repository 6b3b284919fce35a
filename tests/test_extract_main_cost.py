"""The main process's cost per image in extract (issue 50): what was cut must give the same bits.

- the codes' cast to float16 runs in pieces on the calling thread (extract/runner.py): the same bits
  as one torch cast of the whole batch, for any shape, and codes already float16 are kept as they are;
- a merge copies rows as arrays, as stored (cache/_segments.py read_merge_rows): the segment it writes
  holds exactly what the per-row way (read_segment_rows, then write_segment) wrote, holes, views,
  unlabeled rows, classes added later and all.
"""
import h5py
import numpy as np
import pytest
import torch

from cnncodes.cache._segments import (SegmentRows, read_merge_rows, read_segment_rows, write_segment)
from cnncodes.cache.schema import CODES_GROUP
from cnncodes.extract.runner import _as_stored


@pytest.mark.parametrize("shape", [(32, 4096), (7, 100352), (3, 5), (0, 4096), (256, 2048)])
def test_the_cast_in_pieces_gives_torchs_bits(shape):
    rng = np.random.default_rng(sum(shape))
    codes = (rng.standard_normal(shape) * rng.choice([1e-6, 1e-3, 1.0, 7e4], size=shape)).astype(np.float32)
    codes.flat[::97] = np.nan
    got = _as_stored({"fc7": codes}, "float16")["fc7"]
    want = torch.from_numpy(codes).to(torch.float16).numpy()
    assert got.shape == codes.shape and got.dtype == np.float16
    assert np.array_equal(got.view(np.uint16), want.view(np.uint16))


def test_float16_codes_are_kept_and_float32_caches_untouched():
    half = np.ones((4, 8), np.float16)
    assert _as_stored({"a": half}, "float16")["a"] is half
    single = np.ones((4, 8), np.float32)
    assert _as_stored({"a": single}, "float32")["a"] is single


def _rows(n, start, classes, views):
    rng = np.random.default_rng(start)
    return SegmentRows(
        paths=[f"{'é' if i % 5 == 0 else ''}class/{'x' * (i % 13)}img{start + i}.jpg" for i in range(n)],
        keys=["%064x" % (start + i) for i in range(n)],
        splits=[("train", "val", "test")[i % 3] for i in range(n)],
        classes=[None if i % 7 == 3 else classes[i % len(classes)] for i in range(n)],
        stats=[(1000 + i, 1_600_000_000_000_000_000 + i, -1 if i % 11 == 0 else 77 + i) for i in range(n)],
        views=[(i % 3) if views else 0 for i in range(n)],
        codes={"a": [rng.standard_normal((n, 6)).astype(np.float16)],
               "b": [rng.standard_normal((n, 3)).astype(np.float16)]})


def _content(path):
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj.dtype.str, obj.dtype.metadata, obj.shape, obj.chunks, obj.compression,
                             obj.fletcher32, obj[()].tobytes())
        f.visititems(visit)
        out["/attrs"] = sorted((k, repr(v)) for k, v in f.attrs.items())
    return out


@pytest.mark.parametrize("views", [False, True])
def test_a_merge_as_arrays_writes_what_the_per_row_merge_wrote(tmp_path, views):
    widths, dtype = {"a": 6, "b": 3}, np.dtype(np.float16)
    attrs = {"backbone": "toy", "kind": "merged", "seq": 9} | ({"views": '{"count": 2}'} if views else {})
    first, second = tmp_path / "seg-00000001.h5", tmp_path / "seg-00000002.h5"
    write_segment(str(first), attrs, ["ant", "bee"], _rows(40, 0, ["ant", "bee"], views), widths, dtype)
    # the second segment knows a class the first does not: the cache's table extends both
    write_segment(str(second), attrs, ["ant", "bee", "cat"], _rows(30, 100, ["cat", "ant"], views), widths, dtype)
    sources = [(str(first), [(0, 5), (9, 22), (30, 40)]), (str(second), [(0, 30)])]
    classes = ["ant", "bee", "cat", "dog"]

    per_row = SegmentRows()
    for path, ranges in sources:
        per_row.extend_rows(read_segment_rows(path, [i for a, b in ranges for i in range(a, b)], widths))
    write_segment(str(tmp_path / "old.h5"), attrs, classes, per_row, widths, dtype)
    as_arrays = read_merge_rows(sources, widths, classes, dtype)
    write_segment(str(tmp_path / "new.h5"), attrs, classes, as_arrays, widths, dtype)

    assert _content(tmp_path / "old.h5") == _content(tmp_path / "new.h5")
    with h5py.File(tmp_path / "new.h5", "r") as f:
        assert f[CODES_GROUP]["a"].shape == (58, 6)
    assert [p.decode() for p in as_arrays.paths.tolist()] == per_row.paths
