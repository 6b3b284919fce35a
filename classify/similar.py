"""The k nearest rows of a cache to a few query vectors, by cosine, exactly: the cache's codes are
read a load at a time within the memory budget (classify/stream.py), each load normalised and
multiplied with the queries, and a running top k kept per query. Memory is one load and the
queries' scores for it, whatever the cache's size."""
import numpy as np

from .stream import CodeStream


def normalised(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def nearest_rows(cache_path, layer, queries, k, budget_bytes, exclude=None) -> tuple:
    """(rows [q, k] int64, cosines [q, k] float32), best first, for each query vector (rows of
    ``queries`` [q, D]); ``exclude``: for each query a cache row that may not be its answer (the
    query's own row), or -1. Fewer than k rows in the cache: the missing slots are row -1, -inf."""
    Q = normalised(queries)
    q = len(Q)
    exclude = np.full(q, -1) if exclude is None else np.asarray(exclude)
    best_rows = np.full((q, k), -1, dtype=np.int64)
    best = np.full((q, k), -np.inf, dtype=np.float32)
    stream = CodeStream(cache_path, layer, max(budget_bytes, 1 << 20))
    for rows, codes in stream.loads(np.ones(stream.n_rows, dtype=bool)):
        scores = Q @ normalised(codes).T  # [q, m]
        own = exclude[:, None] == rows[None, :]
        scores[own] = -np.inf
        merged = np.concatenate([best, scores], axis=1)
        merged_rows = np.concatenate([best_rows, np.broadcast_to(rows, (q, len(rows)))], axis=1)
        keep = np.argpartition(-merged, min(k, merged.shape[1] - 1), axis=1)[:, :k]
        best = np.take_along_axis(merged, keep, axis=1)
        best_rows = np.take_along_axis(merged_rows, keep, axis=1)
    order = np.lexsort((best_rows, -best), axis=1) if q else np.zeros((0, k), dtype=np.int64)
    best, best_rows = np.take_along_axis(best, order, axis=1), np.take_along_axis(best_rows, order, axis=1)
    best_rows[~np.isfinite(best)] = -1
    return best_rows, best
