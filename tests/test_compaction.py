"""The merge policy alone: plain manifests in, decisions out (no HDF5, no files)."""
from cnncodes.cache import _compaction as compaction
from cnncodes.cache._manifest import Manifest


def manifest(segments, ranges):
    return Manifest(attrs={}, segments=dict(segments), ranges=[list(r) for r in ranges])


def test_cut_ranges_splits_around_holes_and_keeps_order():
    ranges = [["a", 0, 10], ["b", 0, 4]]
    assert compaction.cut_ranges(ranges, {"a": {0, 4, 5, 9}}) == [["a", 1, 4], ["a", 6, 9], ["b", 0, 4]]
    assert compaction.cut_ranges(ranges, {"b": {0, 1, 2, 3}}) == [["a", 0, 10]]
    assert compaction.cut_ranges(ranges, {}) == ranges


def test_segments_with_no_live_row_are_retired_without_a_copy():
    m = manifest({"a": 10, "b": 5}, [["b", 0, 5]])
    assert compaction.unreferenced(m) == ["a"]
    compaction.forget(m, "a")
    assert list(m.segments) == ["b"] and m.ranges == [["b", 0, 5]]


def test_holes_and_dead_rows_rewrite_one_segment_first():
    holey = manifest({"a": 200, "b": 1}, [["a", 2 * i, 2 * i + 1] for i in range(33)] + [["b", 0, 1]])
    assert compaction.next_merge(holey, row_bytes=100) == ["a"]           # 33 ranges > 32
    dead = manifest({"a": 100, "b": 1}, [["a", 0, 49], ["b", 0, 1]])
    assert compaction.next_merge(dead, row_bytes=100) == ["a"]            # 51 of 100 rows dead
    fine = manifest({"a": 100, "b": 1}, [["a", 0, 51], ["b", 0, 1]])
    assert compaction.next_merge(fine, row_bytes=100) is None             # older larger than newer: keep


def test_the_newest_two_merge_geometrically_up_to_the_cap():
    assert compaction.next_merge(manifest({"a": 8, "b": 8}, [["a", 0, 8], ["b", 0, 8]]), 100) == ["a", "b"]
    assert compaction.next_merge(manifest({"a": 9, "b": 8}, [["a", 0, 9], ["b", 0, 8]]), 100) is None
    wide = compaction.MERGE_CAP_BYTES // 4096  # the cap in rows falls to its floor, 4096
    big = manifest({"a": 3000, "b": 3000}, [["a", 0, 3000], ["b", 0, 3000]])
    assert compaction.next_merge(big, row_bytes=wide) is None
    assert compaction.next_merge(big, row_bytes=100) == ["a", "b"]


def test_apply_merge_puts_the_merged_segment_in_the_first_ones_place():
    m = manifest({"a": 5, "b": 4, "c": 4}, [["a", 0, 5], ["b", 1, 3], ["c", 0, 4]])
    compaction.apply_merge(m, ["b", "c"], "m", 6)
    assert list(m.segments) == ["a", "m"] and m.segments["m"] == 6
    assert m.ranges == [["a", 0, 5], ["m", 0, 6]]
    repeated = manifest({"a": 5}, [["a", 0, 5]])
    while (names := compaction.next_merge(repeated, 100)) is not None:  # a whole policy run terminates
        compaction.apply_merge(repeated, names, "x", repeated.n_rows)
    assert list(repeated.segments) == ["a"]
