"""The one cosine engine: every search of the codes by cosine (similar, the audit's pairs, report.html's
neighbours, select's diversity) normalises rows and ranks them here.

- ``unit(X)``: float32 rows of unit length (a zero row stays zero), a block at a time when asked to;
- ``top_k(queries, blocks, k, exclude=)``: the exact k nearest rows by cosine to each query, over
  ``blocks`` that yield (row numbers, codes) a block at a time: ``array_blocks`` over an array in
  memory, ``cache_blocks`` over a cache's streamed loads (classify/stream.py) within a memory
  budget. A query's ``exclude`` row never answers it (its own row). One memory rule
  (``block_rows``) sizes every block: one unit copy of the block and the queries' scores for it;
- the same call on a cache, backed by its faiss index when it has one for the layer, is
  classify/index.py's ``nearest_in_cache`` (the index builds on this module, never the reverse).

scikit-learn's ``pairwise_distances_chunked(..., working_memory=)`` over ``row_norms`` is the model:
one chunked engine the neighbour searches build on.
"""
import functools
import os

import numpy as np

from ..cpu_features import usable_cores
from .gather import float32_rows

NORM_BLOCK = 65536  # rows normalised at a time by unit_blocks: no float64 or second full copy
MAX_BLOCK_ROWS = 8192  # blocks of 8192 and 65536 rows scan at one rate: the smaller keeps scores small
MERGE_COPIES = 3    # a block's scores, their merge with the running best, and its row numbers
FEW_QUERIES = 8     # up to this many queries, a dot a row; more, BLAS's product (_scan)
# rows a thread takes per call: numpy releases the GIL only for loops of 500 or more, and 512 rows
# (2.6 MB at 1280-d) are read twice while near the core. With 2 threads on 2 cores, slices of
# 512-1024 rows ran one query at 0.9-1.0 of IndexFlatIP's rate, those of 256-384 at 0.55
SLICE_ROWS = 512
MAX_THREADS = 8


def _einsum_dot(a, b, out):
    return np.einsum("...j,...j->...", a, b, out=out)


# np.vecdot (numpy 2): a dot a row that releases the GIL; numpy 1's einsum holds it (one thread)
_dot = getattr(np, "vecdot", None) or _einsum_dot
_RELEASES_GIL = hasattr(np, "vecdot")


def row_norms(X) -> np.ndarray:
    """Each row's norm as unit() divides by it: at least 1e-12, so a zero row stays zero."""
    return np.maximum(np.linalg.norm(X, axis=1), 1e-12)


def unit(X, out=None) -> np.ndarray:
    """The rows of ``X`` [n, D] (any float dtype) as float32 rows of unit length; a zero row stays zero.
    ``out``: where to write them (``X`` itself, a float32 array, to normalise it in place)."""
    X = np.asarray(X, dtype=np.float32)
    return np.divide(X, row_norms(X)[:, None], out=out)


def unit_blocks(take, rows, block=NORM_BLOCK) -> np.ndarray:
    """The unit rows of ``rows`` read through ``take(indices) -> codes`` a block at a time, into one
    float32 array: no float64 or unnormalised copy of them all."""
    rows = np.asarray(rows)
    first = take(rows[:1])
    out = np.empty((len(rows), first.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), block):
        out[start:start + block] = unit(take(rows[start:start + block]))
    return out


def block_rows(n_queries, width, budget_bytes) -> int:
    """Rows of a block searched at once within ``budget_bytes``: the block's unit float32 copy and,
    per query, its scores, their merge and the merged row numbers (the one memory rule)."""
    per_row = 4 * width + n_queries * (4 + 12) * MERGE_COPIES // 2
    return int(max(256, min(MAX_BLOCK_ROWS, budget_bytes // max(1, per_row))))


def array_blocks(X, n_queries=1, budget_bytes=256 << 20):
    """Yield (rows, codes) over the rows of an array in memory, a block at a time within the budget."""
    step = block_rows(n_queries, X.shape[1], budget_bytes)
    for start in range(0, len(X), step):
        stop = min(len(X), start + step)
        yield np.arange(start, stop), X[start:stop]


def cache_blocks(cache_path, layer, budget_bytes, mask=None):
    """Yield (rows, codes float32) over a cache's rows (those in the boolean ``mask``: all by
    default), a streamed load at a time within the budget (classify/stream.py)."""
    from .stream import CodeStream
    stream = CodeStream(cache_path, layer, max(budget_bytes, 1 << 20))
    mask = np.ones(stream.n_rows, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    yield from stream.loads(mask)


def top_k(queries, blocks, k, exclude=None) -> tuple:
    """(rows [q, k] int64, cosines [q, k] float32), best first (ties: the lower row first), for each
    query vector (rows of ``queries`` [q, D], any scale) among the rows ``blocks`` yields as (row
    numbers [m], codes [m, D], any scale). ``exclude``: for each query a row that may not answer it
    (its own row), or -1. Fewer than k rows: the missing slots are row -1, cosine -inf."""
    Q = unit(queries)
    q = len(Q)
    exclude = np.full(q, -1, dtype=np.int64) if exclude is None else np.asarray(exclude, dtype=np.int64)
    best_rows = np.full((q, k), -1, dtype=np.int64)
    best = np.full((q, k), -np.inf, dtype=np.float32)
    for rows, codes in blocks:
        if not len(rows) or not q:
            continue
        rows = np.asarray(rows, dtype=np.int64)
        codes = float32_rows(np.asarray(codes))  # codes held as stored (the audit's float16) converted fast
        scores = _cosines(Q, codes)
        own = np.flatnonzero((exclude >= rows[0]) & (exclude <= rows[-1]))
        if len(own):  # a query's own row in this block: never its answer
            at = np.searchsorted(rows, exclude[own])
            hit = (at < len(rows)) & (rows[np.minimum(at, len(rows) - 1)] == exclude[own])
            scores[own[hit], at[hit]] = -np.inf
        take = min(k, scores.shape[1])
        if scores.shape[1] > take:  # only the block's k best join the merge
            part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
            block_best, block_rows_ = np.take_along_axis(scores, part, axis=1), rows[part]
        else:
            block_best, block_rows_ = scores, np.broadcast_to(rows, scores.shape)
        merged = np.concatenate([best, block_best], axis=1)
        merged_rows = np.concatenate([best_rows, block_rows_], axis=1)
        keep = np.argpartition(-merged, k - 1, axis=1)[:, :k]
        best = np.take_along_axis(merged, keep, axis=1)
        best_rows = np.take_along_axis(merged_rows, keep, axis=1)
    return ranked(best_rows, best)


def _cosines(Q, codes) -> np.ndarray:
    """[q, m] cosines of unit queries with rows of any scale, as products over norms: the block is
    read twice (product, norms) and never rewritten, where a unit copy first would read it twice and
    write it once. Both reads go a slice of rows at a time, so the second finds the slice near the
    core, and the slices are shared among the cores through threads: numpy's dot loops and BLAS
    release the GIL (numpy's einsum does not: it held one query to 0.5-0.6 of faiss IndexFlatIP's
    rate, docs/benchmarks.md). BLAS runs one thread a slice then, so that threads do not oversubscribe."""
    scores = np.empty((len(Q), len(codes)), dtype=np.float32)
    norms = np.empty(len(codes), dtype=np.float32)
    parts = max(1, min(_cores(), len(codes) // (2 * SLICE_ROWS))) if _RELEASES_GIL else 1
    if parts > 1 and len(Q) > FEW_QUERIES:
        with _blas().limit(limits=1, user_api="blas"):
            _in_threads(parts, Q, codes, scores, norms)
    else:
        _in_threads(parts, Q, codes, scores, norms)
    scores /= np.maximum(np.sqrt(norms, out=norms), 1e-12, out=norms)
    return scores


def _scan(start, stop, Q, codes, scores, norms):
    """Rows start:stop of the block, a slice at a time: their products with the queries (BLAS for
    many queries; a dot a row for a few, bound by memory) and their squared norms."""
    for at in range(start, stop, SLICE_ROWS):
        end = min(stop, at + SLICE_ROWS)
        part = codes[at:end]
        if len(Q) > FEW_QUERIES or not _RELEASES_GIL:  # numpy 1: one thread, where BLAS beats einsum
            np.matmul(Q, part.T, out=scores[:, at:end])
        else:
            _dot(part, Q[:, None, :], out=scores[:, at:end])
        _dot(part, part, out=norms[at:end])


def _in_threads(parts, Q, codes, scores, norms):
    """_scan over the block's rows split in ``parts`` contiguous parts: the calling thread takes the
    last, a pool kept for the process the others."""
    if parts <= 1:
        return _scan(0, len(codes), Q, codes, scores, norms)
    bounds = np.linspace(0, len(codes), parts + 1).astype(int)
    futures = [_pool().submit(_scan, bounds[i], bounds[i + 1], Q, codes, scores, norms)
               for i in range(parts - 1)]
    _scan(bounds[-2], bounds[-1], Q, codes, scores, norms)
    for future in futures:
        future.result()


def _cores() -> int:
    """Threads a scan may use: OMP_NUM_THREADS where it is set (Ray's workers set 1, as do the tests'
    processes), else the cores this process may run on."""
    try:
        cores = int(os.environ["OMP_NUM_THREADS"])
    except (KeyError, ValueError):
        cores = usable_cores()
    return max(1, min(MAX_THREADS, cores))


@functools.cache
def _blas():
    """threadpoolctl's view of the BLAS libraries loaded (numpy's is, from its import), made once:
    a new one per block would scan the process's libraries each time."""
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()


_pools = {}


def _pool():
    """The process's scan threads, made on first use: keyed by process id, because a pool made before
    a fork has no threads in the child and would never run what is submitted there."""
    pid = os.getpid()
    if pid not in _pools:
        from concurrent.futures import ThreadPoolExecutor
        _pools.clear()
        _pools[pid] = ThreadPoolExecutor(max(1, _cores() - 1), thread_name_prefix="cnncodes-cosine")
    return _pools[pid]


def ranked(rows, scores) -> tuple:
    """(rows, scores) of each query sorted best first, ties by the lower row; slots without a
    finite score become row -1, -inf."""
    rows, scores = np.array(rows, dtype=np.int64), np.array(scores, dtype=np.float32)
    rows[~np.isfinite(scores)] = np.iinfo(np.int64).max
    order = np.lexsort((rows, -scores), axis=1) if len(rows) else np.zeros(rows.shape, dtype=np.int64)
    rows, scores = np.take_along_axis(rows, order, axis=1), np.take_along_axis(scores, order, axis=1)
    rows[~np.isfinite(scores)] = -1
    scores[~np.isfinite(scores)] = -np.inf
    return rows, scores
