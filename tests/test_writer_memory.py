"""What the cache's writer keeps of the segments it wrote gives what reading them back gives (issue 50).

The writer takes a just-written segment's per-row arrays, failures, moved paths and code chunks from
memory when it links the segment and when it merges it (cache/_segments.py), and computes its rows
digest from the arrays it wrote: each must equal what reading the file gives.
"""
import numpy as np
import pytest

from cnncodes.cache import _segments
from cnncodes.cache._integrity import ROWS_DIGEST, TABLES_DIGEST, rows_digest, stored_digest, tables_digest
from cnncodes.cache._segments import (SegmentRows, open_segment, read_merge_rows, read_segment_for_link,
                                      write_segment)


def _rows(n, start, views):
    rng = np.random.default_rng(start)
    return SegmentRows(
        paths=[f"{'é' if i % 5 == 0 else ''}class/{'x' * (i % 13)}img{start + i}.jpg" for i in range(n)],
        keys=["%064x" % (start + i) for i in range(n)],
        splits=[("train", "val", "test")[i % 3] for i in range(n)],
        classes=[None if i % 7 == 3 else ("ant", "bee")[i % 2] for i in range(n)],
        stats=[(1000 + i, 1_600_000_000_000_000_000 + i, -1 if i % 11 == 0 else 77 + i) for i in range(n)],
        views=[(i % 3) if views else 0 for i in range(n)],
        codes={"a": [rng.standard_normal((n, 6)).astype(np.float16)],
               "b": [rng.standard_normal((n, 300)).astype(np.float16)]},
        failed_paths=["broken/ü.jpg", "broken/b.jpg"], failed_keys=["%064x" % 1, ""],
        failed_reasons=["cannot identify image", "trünçated"], failed_stats=[(1, 2, 3), (4, 5, 6)],
        moved_from=["old/é.jpg"] if views else [])


WIDTHS = {"a": 6, "b": 300}


def _attrs(views):
    return {"backbone": "toy", "kind": "shard", "seq": 3, "dtype": "float16", "created": "2026-12-06"} | (
        {"views": '{"count": 2}'} if views else {})


def _forget_all(monkeypatch):
    monkeypatch.setattr(_segments, "_written", {})


@pytest.mark.parametrize("views", [False, True])
def test_the_digests_from_the_arrays_are_the_files(tmp_path, views):
    path = str(tmp_path / "seg-00000001.h5")
    digest = write_segment(path, _attrs(views), ["ant", "bee"], _rows(700, 0, views), WIDTHS, np.dtype(np.float16))
    with open_segment(path) as f:
        assert stored_digest(f, TABLES_DIGEST) == tables_digest(f)  # the tables as read back
        assert digest == stored_digest(f, ROWS_DIGEST) == rows_digest(f, tables_digest(f))


@pytest.mark.parametrize("views", [False, True])
def test_a_link_from_memory_reads_what_the_file_holds(tmp_path, monkeypatch, views):
    path = str(tmp_path / "seg-00000001.h5")
    digest = write_segment(path, _attrs(views), ["ant", "bee"], _rows(300, 0, views), WIDTHS, np.dtype(np.float16))
    assert _segments._recall(path, digest) is not None and _segments._recall(path, "f" * 64) is None
    remembered = read_segment_for_link(path)
    _forget_all(monkeypatch)
    assert _segments._recall(path, digest) is None
    read = read_segment_for_link(path)
    index, paths, attrs, failures, moved = remembered
    assert (paths, attrs, failures, moved) == read[1:]
    for name in ("name", "rows", "class_names"):
        assert getattr(index, name) == getattr(read[0], name)
    for name in ("keys", "stats", "labels", "splits", "views"):
        want = getattr(read[0], name)
        assert getattr(index, name).dtype == want.dtype and np.array_equal(getattr(index, name), want)


@pytest.mark.parametrize("views", [False, True])
def test_a_merge_from_memory_writes_the_file_a_merge_from_the_files_writes(tmp_path, monkeypatch, views):
    dtype = np.dtype(np.float16)
    merged = {}
    for way in ("memory", "files"):
        folder = tmp_path / way
        folder.mkdir()
        first, second = str(folder / "seg-00000001.h5"), str(folder / "seg-00000002.h5")
        digests = {first: write_segment(first, _attrs(views), ["ant", "bee"], _rows(300, 0, views), WIDTHS, dtype),
                   second: write_segment(second, _attrs(views), ["ant", "bee"], _rows(520, 1000, views), WIDTHS, dtype)}
        if way == "files":
            _forget_all(monkeypatch)
        else:
            assert all(_segments._recall(path, digest) for path, digest in digests.items())
        sources = [(first, [(0, 5), (9, 22), (30, 300)]), (second, [(0, 520)])]
        rows = read_merge_rows(sources, WIDTHS, ["ant", "bee", "cat"], dtype, digests)
        write_segment(str(folder / "merged.h5"), dict(_attrs(views), kind="merged"), ["ant", "bee", "cat"], rows,
                      WIDTHS, dtype)
        merged[way] = (folder / "merged.h5").read_bytes()
    assert merged["memory"] == merged["files"]


def test_memory_is_bounded_and_merged_segments_are_forgotten(tmp_path, monkeypatch):
    monkeypatch.setattr(_segments, "_written", {})
    monkeypatch.setattr(_segments, "WRITTEN_MEMORY", 3 * 256 * 300 * 2 + 3 * 4 * 2 + 16)
    dtype = np.dtype(np.float16)
    paths = [str(tmp_path / f"seg-0000000{i}.h5") for i in range(1, 4)]
    digests = [write_segment(path, _attrs(False), ["ant", "bee"], _rows(n, 1000 * i, False), {"b": 300}, dtype)
               for i, (path, n) in enumerate(zip(paths, (512, 256, 10)))]
    assert _segments._recall(paths[0], digests[0]) is None  # the largest went first
    assert _segments._recall(paths[1], digests[1]) is not None and _segments._recall(paths[2], digests[2]) is not None
    _segments.forget_written(paths[1])
    assert _segments._recall(paths[1], digests[1]) is None
