"""Where each path's rows live among a cache's segments, held by the one writer (append.py).

Pure bookkeeping, no file I/O: segment name -> its SegmentIndex (keys, stat data, views), and
path -> (segment, local row of its centre view); an image's augmented views follow that row.
"""
from dataclasses import dataclass, field

import numpy as np

from .schema import text


@dataclass(frozen=True)
class Known:
    """What the cache holds for one path: a row or a recorded failure."""
    key: str
    stat: tuple
    failed: bool
    reason: str = None  # why it failed
    label: str = field(default=None, compare=False)  # the row's class name (None: unlabeled); not identity


class RowIndex:
    def __init__(self):
        self.segments = {}   # segment name -> SegmentIndex
        self._row_of = {}    # path -> (segment name, local row of its centre view)

    def __contains__(self, path) -> bool:
        return path in self._row_of

    def paths(self) -> list:
        return list(self._row_of)

    def add(self, index, paths, ranges) -> None:
        """A segment's SegmentIndex, and its paths' rows within ``ranges`` [(start, stop)] (the live
        ones; a path met again later points at the later row)."""
        self.segments[index.name] = index
        views = index.views
        for start, stop in ranges:
            for local in (start + np.flatnonzero(views[start:stop] == 0)).tolist():
                self._row_of[paths[local]] = (index.name, local)

    def forget(self, name) -> None:
        """A segment gone from the cache (merged away or unreferenced)."""
        self.segments.pop(name, None)

    def known(self, path):
        """Known(key, stat) of the path's row, or None."""
        where = self._row_of.get(path)
        if where is None:
            return None
        index = self.segments[where[0]]
        label = int(index.labels[where[1]])
        return Known(text(index.keys[where[1]]), tuple(int(v) for v in index.stats[where[1]]), False,
                     label=index.class_names[label] if label >= 0 else None)

    def image_rows(self, paths) -> dict:
        """segment -> [(local centre row, rows of the image, path)] for these paths, sorted by row."""
        by_segment = {}
        for path in paths:
            segment, local = self._row_of[path]
            by_segment.setdefault(segment, []).append((local, self.segments[segment].span(local), path))
        return {segment: sorted(items) for segment, items in by_segment.items()}

    def take(self, paths) -> dict:
        """Remove these paths; returns segment -> the set of their local rows (views included), the
        holes to cut from the live ranges."""
        holes = {}
        for path in paths:
            segment, local = self._row_of.pop(path)
            holes.setdefault(segment, set()).update(range(local, local + self.segments[segment].span(local)))
        return holes
