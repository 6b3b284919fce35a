"""Codes that do not fit the memory budget, read a load at a time (`fit`/`compare --max-memory`).

A load is a few blocks of consecutive rows, read as stored (float16 or float32) and converted to
float32 for that load only. For training, the blocks come in a seeded random order from anywhere
in the file and the rows of a load are shuffled: rows are stored in commit order (often class by
class), so reading them in file order would feed a stochastic solver one class at a time.
"""
import sys
from dataclasses import dataclass

import numpy as np

from ..cache import open_cache
from ..cache.schema import CODE_CHUNK_ROWS

from .budget import rows_that_fit

BLOCK_ROWS = 4096     # rows read together: 16 HDF5 chunks of codes
BLOCKS_PER_LOAD = 8
STREAM_COPIES = 3     # the float32 load, a block as read, a minibatch and its scaled copy


class CodeStream:
    """One layer of one cache, in loads of at most ``load_rows`` rows."""

    def __init__(self, path, layer, budget):
        self.path, self.layer, self.budget = path, layer, budget
        with open_cache(path) as c:
            self.n_rows, self.width = len(c), c.width(layer)
        self.load_rows = rows_that_fit(self.n_rows, self.width, budget * 3 // STREAM_COPIES)
        # At least BLOCKS_PER_LOAD blocks per load (down to one HDF5 chunk per block), so that a
        # shuffled load mixes rows from several places in the file.
        self.block_rows = max(1, min(BLOCK_ROWS, max(CODE_CHUNK_ROWS, self.load_rows // BLOCKS_PER_LOAD),
                                     self.load_rows))

    def loads(self, mask, rng=None):
        """Yield (rows [m] int64, codes float32 [m, D]) for the rows in the boolean ``mask``, one
        load at a time, rows in file order within a load. With ``rng`` the loads gather blocks
        from random places in the file."""
        mask = np.asarray(mask, dtype=bool)
        starts = [s for s in range(0, self.n_rows, self.block_rows) if mask[s:s + self.block_rows].any()]
        if rng is not None:
            starts = rng.permutation(starts).tolist()
        per_load = max(1, self.load_rows // self.block_rows)
        with open_cache(self.path) as c:
            dsets = c.datasets(self.layer)
            for i in range(0, len(starts), per_load):
                group = sorted(starts[i:i + per_load])
                rows = np.concatenate([start + np.flatnonzero(mask[start:start + self.block_rows]) for start in group])
                X = np.empty((len(rows), self.width), dtype=np.float32)
                filled = 0
                for start in group:
                    filled += c.read_rows_into(X, filled, dsets, start, mask[start:start + self.block_rows],
                                               _vectorised_copy)
                yield rows, X

    def minibatches(self, mask, transform, targets, batch_size, rng=None):
        """Minibatches (X float32 [b, D] after ``transform``, targets[rows]) over ``mask``; with
        ``rng``, loads from random places and the rows of each load shuffled."""
        for rows, X in self.loads(mask, rng):
            order = rng.permutation(len(rows)) if rng is not None else np.arange(len(rows))
            for i in range(0, len(rows), batch_size):
                pick = order[i:i + batch_size]
                yield transform(X[pick]), targets[rows[pick]]


def _vectorised_copy(destination, source):
    """float16 -> float32 through torch where this process has it loaded (vectorised, where numpy's
    conversion is several times slower); numpy's otherwise, so a torch-free process (serve, similar
    through an index) never imports it."""
    torch = sys.modules.get("torch")
    if torch is None:
        np.copyto(destination, source)
    else:
        torch.from_numpy(destination).copy_(torch.from_numpy(source))


@dataclass(frozen=True)
class StreamedRows:
    """Some rows of a CodeStream (boolean ``mask`` over the cache), standing in for X where the
    codes do not fit in memory: what StreamedSweep fits on and predicts."""
    stream: CodeStream
    mask: np.ndarray

    @property
    def rows(self) -> np.ndarray:
        return np.flatnonzero(self.mask)

    def __len__(self) -> int:
        return int(np.count_nonzero(self.mask))

    def loads(self, rng=None):
        return self.stream.loads(self.mask, rng)
