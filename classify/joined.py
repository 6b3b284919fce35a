"""Codes of several caches side by side: one matrix from two backbones' codes of the same photos.

Rows are joined by path and view (a folder can hold byte-identical photos under two names, so
the content key alone would pair the wrong rows) and must agree on content key, label and split;
anything else is refused in one line. The first cache is the primary: its row order, reader
(mistakes, streaming) and fingerprint stay; the others are recorded with the model, so predict
encodes new photos with every extractor and puts their codes side by side the same way.
"""
from dataclasses import replace

import numpy as np

from ..cache import open_cache
from ..cache.schema import class_of

from .errors import ClassifyError


def join_caches(data, others):
    """``data`` (the primary's CodesData, in memory) with each other cache's codes (every layer
    it holds) appended as columns, in the primary's row order."""
    if not others:
        return data
    if data.streamed:
        raise ClassifyError(f"{data.path}: codes side by side are held in memory, and these exceed max_memory=; "
                            "raise max_memory= or use one cache")
    with open_cache(data.path) as c:
        keys = np.asarray(c.keys)
        paths = c.paths
    index = {(p, int(v)): i for i, (p, v) in enumerate(zip(paths, data.views))}
    parts, blocks = [], [data.X]
    for other in others:
        with open_cache(other) as c:
            other_rows = {(p, int(v)): i for i, (p, v) in enumerate(zip(c.paths, c.views))}
            _check_same_rows(data.path, index, other, other_rows)
            order = np.array([other_rows[key] for key in index], dtype=np.int64)  # the primary's order
            differ = np.flatnonzero(np.asarray(c.keys)[order] != keys)
            if len(differ):
                raise ClassifyError(f"{other}: {len(differ)} photos differ in bytes from {data.path}'s "
                                    f"(e.g. {paths[differ[0]]}); extract both caches from the same folder, "
                                    "at the same time")
            if class_of(c.labels[order], c.class_names) != class_of(data.y, data.class_names) or \
                    not np.array_equal(c.splits.astype(str)[order], data.splits):
                raise ClassifyError(f"{other}: labels or splits differ from {data.path}'s for the same photos; "
                                    "extract both with the same split_seed= (or split folders)")
            layers = tuple(c.layers)
            blocks.append(c.codes(layers)[order])
            parts.append({"cache": c.path, "layer": "+".join(layers), "fingerprint": c.fingerprint,
                          "width": int(blocks[-1].shape[1])})
    return replace(data, _X=np.concatenate(blocks, axis=1), side_by_side=parts)


def _check_same_rows(primary, index, other, other_rows):
    missing = [key for key in index if key not in other_rows]
    extra = [key for key in other_rows if key not in index]
    if missing or extra:
        example = (missing or extra)[0][0]
        raise ClassifyError(f"{other}: its rows do not match {primary}'s ({len(missing)} missing there, "
                            f"{len(extra)} only there, e.g. {example}); extract the same folder into both caches "
                            "(same views=), or extract with prune=True into the one with rows whose file is gone")
