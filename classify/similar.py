"""The k nearest rows of a cache to a few query vectors, by cosine: the one cosine engine
(classify/cosine.py) over the cache's streamed loads within the memory budget, or over its faiss
index when it has one (classify/index.py). Memory is one load and the queries' scores for it,
whatever the cache's size."""
from .cosine import cache_blocks, top_k
from .cosine import unit as normalised  # noqa: F401  (the name this module gave it)


def nearest_rows(cache_path, layer, queries, k, budget_bytes, exclude=None) -> tuple:
    """(rows [q, k] int64, cosines [q, k] float32), best first, exactly, for each query vector (rows
    of ``queries`` [q, D]); ``exclude``: for each query a cache row that may not be its answer (the
    query's own row), or -1. Fewer than k rows in the cache: the missing slots are row -1, -inf."""
    return top_k(queries, cache_blocks(cache_path, layer, budget_bytes), k, exclude)
