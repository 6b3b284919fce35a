"""The writer's row index (cache/_row_index.py): pure bookkeeping, tested without HDF5."""
import numpy as np

from cnncodes.cache._row_index import Known, RowIndex
from cnncodes.cache._segments import SegmentIndex


def segment(name, keys, views):
    n = len(keys)
    return SegmentIndex(name, n, np.array([k.encode() for k in keys], dtype="S64"),
                        np.arange(n * 3, dtype=np.int64).reshape(n, 3), np.zeros(n, np.int32),
                        np.array([b"train"] * n), ["a"], np.asarray(views, dtype=np.uint8))


def test_paths_point_at_their_centre_rows_and_views_travel_with_them():
    index = RowIndex()
    # a.jpg has two augmented views after its centre row; b.jpg has none; c.jpg one
    index.add(segment("s1", ["ka", "ka", "ka", "kb", "kc", "kc"], [0, 1, 2, 0, 0, 1]),
              ["a.jpg", "a.jpg", "a.jpg", "b.jpg", "c.jpg", "c.jpg"], [(0, 6)])
    assert sorted(index.paths()) == ["a.jpg", "b.jpg", "c.jpg"] and "b.jpg" in index and "z.jpg" not in index
    assert index.known("c.jpg") == Known("kc", (12, 13, 14), False) and index.known("z.jpg") is None
    assert index.image_rows(["c.jpg", "a.jpg"]) == {"s1": [(0, 3, "a.jpg"), (4, 2, "c.jpg")]}
    assert index.take(["a.jpg", "b.jpg"]) == {"s1": {0, 1, 2, 3}}
    assert index.paths() == ["c.jpg"]


def test_a_later_segment_and_only_live_ranges_win():
    index = RowIndex()
    index.add(segment("s1", ["k1", "k2", "k3"], [0, 0, 0]), ["a", "b", "c"], [(0, 1), (2, 3)])  # b was cut
    assert "b" not in index and index.known("c").key == "k3"
    index.add(segment("s2", ["k9"], [0]), ["a"], [(0, 1)])  # a re-extracted into a newer segment
    assert index.known("a").key == "k9" and index.take(["a"]) == {"s2": {0}}
    index.forget("s1")
    assert "s1" not in index.segments and "s2" in index.segments
