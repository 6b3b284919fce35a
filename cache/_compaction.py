"""The merge policy of a segment cache, as pure functions of its manifest (no HDF5, no files).

A session (cache/append.py) asks what to do next and does the file work: cut rows out of the
live ranges, drop segments nothing references, rewrite a segment full of holes, merge the two
newest segments geometrically (the newer into the older while the older is no larger), up to a
size cap that bounds what any one merge writes. So there are O(log rows) segments and each row
is copied O(log rows) times.
"""
MERGE_CAP_BYTES = 256 << 20   # no merge writes a segment with more code bytes than this
MAX_RANGES_PER_SEGMENT = 32   # more holes than this (replaced or pruned rows): rewrite the segment
MAX_DEAD_FRACTION = 0.5       # more dead rows than this: rewrite the segment
MIN_MERGE_CAP_ROWS = 4096     # the cap in rows never goes below this, however wide the codes


def cut_ranges(ranges, holes: dict) -> list:
    """``ranges`` ([segment, start, stop], in row order) without the rows in ``holes``
    ({segment: set of local rows}); a range split by holes becomes several."""
    out = []
    for segment, start, stop in ranges:
        cut = holes.get(segment)
        if not cut:
            out.append([segment, start, stop])
            continue
        run_start = None
        for i in range(start, stop):
            if i in cut:
                if run_start is not None:
                    out.append([segment, run_start, i])
                    run_start = None
            elif run_start is None:
                run_start = i
        if run_start is not None:
            out.append([segment, run_start, stop])
    return out


def unreferenced(manifest) -> list:
    """Segments with no live row left: retire them as they are, no copy needed."""
    return [name for name in manifest.segments if manifest.live_rows(name) == 0]


def next_merge(manifest, row_bytes: int):
    """The segments to copy into one new segment next, or None: first any segment with too many
    holes or dead rows (alone), then the two newest while the older holds no more live rows than
    the newer and both fit under the cap."""
    for name, stored in manifest.segments.items():
        dead = stored - manifest.live_rows(name)
        if len(manifest.ranges_of(name)) > MAX_RANGES_PER_SEGMENT or dead > MAX_DEAD_FRACTION * stored:
            return [name]
    if len(manifest.segments) >= 2:
        older, newer = list(manifest.segments)[-2:]
        a, b = manifest.live_rows(older), manifest.live_rows(newer)
        if a <= b and a + b <= max(MIN_MERGE_CAP_ROWS, MERGE_CAP_BYTES // max(1, row_bytes)):
            return [older, newer]
    return None


def forget(manifest, name) -> None:
    """Drop a segment from the manifest (its rows are gone or copied elsewhere)."""
    manifest.segments.pop(name, None)
    manifest.ranges = [r for r in manifest.ranges if r[0] != name]


def apply_merge(manifest, names, merged: str, rows: int) -> None:
    """The manifest after ``names``' live rows were copied, in order, into segment ``merged``
    (``rows`` of them): it takes the first one's place among the segments and the ranges."""
    first = next(i for i, r in enumerate(manifest.ranges) if r[0] in names)
    kept = [r for r in manifest.ranges if r[0] not in names]
    manifest.ranges = kept[:first] + [[merged, 0, rows]] + kept[first:]
    segments = {}
    for name, count in manifest.segments.items():
        if name == names[0]:
            segments[merged] = rows
        if name not in names:
            segments[name] = count
    manifest.segments = segments
