"""Near pairs and nearest-neighbour distances among the rows of a code matrix, by cosine.

Up to EXACT_ROWS rows every row is compared with every row: exact products in blocks that fit the
budget. Beyond, the comparisons are confined to cells, as an inverted-file index confines them:
spherical k-means (Lloyd's iterations on a sample) gives ~sqrt(PROBE * rows) cells; a row lives in
the cell of its nearest centroid and is listed in the cells nearly as near (LIST_SLACK); each cell's rows are compared,
by block products, with every row listed in it. A pair is found when one of its two rows is listed
in the other's cell: near copies, close to each other, almost always are (recall measured in
bench/audit_bench.py). The work is a small share of all pairs, each block a matrix product (unlike
an index that scans its lists query by query, or HNSW's graph, which missed more of the planted
copies: docs/cli.md, audit's cost, has the figures), and the only copies are one cell's codes at a
time.

Where the CPU computes bf16 in hardware (cnncodes/cpu_features.py: AVX512-BF16 or AMX), the cells'
products (k-means, finding each row's cells, comparing a cell's rows) run in bf16, several times
fp32's rate (docs/benchmarks.md). A bf16 cosine is off by less than COARSE_MARGIN, so every pair it
puts within the margin of the threshold has its cosine computed again from the codes in float32:
the pairs kept and their cosines are the float32 search's. Each row's distance to its k nearest is
the bf16 one (within ~0.01 of float32's). Elsewhere all of it runs in float32.

With search="index", beyond INDEX_ROWS, where the cache has a faiss index of the layer (`cnncodes
index`, classify/index.py), the index answers instead: each photo's INDEX_NEIGHBOURS nearest, asked
in batches of queries (a photo never answers itself; rows committed after the index are searched
exactly by the index's own search), and a pair is found when either photo lists the other. It is
not the default: a query at a time through faiss's lists or graph costs far more than the cells'
block products for every photo's nearest (docs/cli.md, audit's cost, has the figures).
"""
SEARCHES = ("auto", "exact", "cells", "index")
import numpy as np

from ..cosine import row_norms, unit_blocks
from ..cosine import unit as normalised
from ..gather import float32_rows

PAIRS_CAP = 100_000  # near pairs kept (the closest first) so a degenerate cache cannot fill memory
# The exact products cost rows^2 (each pair once: the upper triangle; docs/cli.md, audit's cost,
# has the seconds): beyond this many rows the comparisons are confined to cells.
EXACT_ROWS = 100_000
PROBE = 4                # the nearest cells a row may live in (its home: the nearest with room)
# A row is listed in its home and in every cell whose (popularity-ranked) cosine is within LIST_SLACK
# of its nearest's, LIST_LEAST to LIST_MOST of them: a row between several cells is listed in
# each, one clearly in its cell in few. Against a fixed number of cells per row, on the million
# synthetic rows of bench/audit_bench.py (three seeds): 4 each, 73-76 of the 80 planted copies
# within reach; 6 each, 76-77 for 1.3-1.4e10 pairs compared; this rule, 5.3 each on average, 76-78
# for 1.1-1.3e10 (docs/benchmarks.md).
LIST_SLACK = 0.004
LIST_LEAST = 2
LIST_MOST = 16
SAMPLE_PER_CELL = 32     # k-means is fitted on this many sampled rows per cell
BALANCE = 2              # a cell is home to at most BALANCE times the mean
HUB_NEIGHBOURS = 10      # sampled rows that measure a centroid's popularity
KMEANS_ITERATIONS = 10   # Lloyd iterations from random centres (k-means++ seeding took far longer):
                         # cells need only be coherent, not converged
# Rows normalised and given their cells at a time: no second copy of every code, and each block's
# temporaries (its codes, scores against every centroid: 16 MB at a million rows' 2,000 cells) small
# enough that the allocator reuses them rather than maps them afresh (at 65,536 rows, page faults
# on 786 MB of scores a block were 10 s).
NORM_BLOCK = 2048
# A bf16 product of two unit rows is off by at most ~2u (the rounded inputs) + u (the rounded
# output), u = 2^-8, from the float32 one, and the threshold compared with it is rounded to bf16:
# candidates within this margin are checked in float32.
COARSE_MARGIN = 0.02
PRODUCT_ROWS = 256       # a cell's rows compared (bf16) a block of this many at a time, the block's rows
PAD_ROWS = 64            # padded to a multiple of this, its candidates to one of PAD_COLUMNS: few shapes
PAD_COLUMNS = 256
PAIR_RANKS = 16          # each row's best this many bf16 scores looked at for near pairs (more: its whole row)
# Beyond this many rows a faiss index of the layer, when the cache has one, gives each photo its
# nearest instead of the exact products or the cells.
INDEX_ROWS = EXACT_ROWS
INDEX_NEIGHBOURS = 10    # nearest asked of the index per photo (at least k): a photo's near pairs past
                         # its 10 nearest are not listed (a degenerate cache of many copies of one photo)
INDEX_BATCH = 8192       # queries per index search at most (fewer where its candidates need more memory)


def neighbours(X, threshold, k, budget_bytes=256 << 20, seed=0, rows=None, index=None, cache_rows=None,
               spread=1, search="auto") -> tuple:
    """(pairs [(i, j, cosine)] with i < j and cosine >= threshold, closest first, at most
    PAIRS_CAP; the mean cosine distance of each row to its k nearest others [m]; how they were
    found; which search: "exact", "cells" or the index's kind), on the cosines of the rows of
    ``X`` (any scale: rows are normalised here), or of ``X[rows]`` when rows are given (numbered
    0..len(rows)-1, without a copy of them all).
    ``index``: a callable giving the cache's faiss index (classify/index.py's CacheIndex) or None,
    asked only beyond INDEX_ROWS rows; ``cache_rows``: the cache row of each of the m rows (what
    the index answers in; default ``rows``), every other row the index answers (a view, say) is
    passed over; ``spread``: rows the cache holds per photo (1 + its views), so that enough are asked.
    ``search``: "auto" (exact up to EXACT_ROWS rows, beyond in cells), "exact", "cells", or "index"
    (the index beyond INDEX_ROWS rows where ``index`` gives one, else as "auto")."""
    # X may hold the codes as stored (float16): each read of them is a float32 gather
    take = (lambda idx: float32_rows(X, idx)) if rows is None else (lambda idx: float32_rows(X, rows[idx]))
    m = len(X) if rows is None else len(rows)
    found = index() if (search == "index" and index is not None and m > INDEX_ROWS) else None
    if found is not None:
        cache_rows = (np.arange(m) if rows is None else np.asarray(rows)) if cache_rows is None else cache_rows
        pairs, knn = _index_neighbours(take, m, found, np.asarray(cache_rows, dtype=np.int64), threshold, k,
                                       budget_bytes, spread)
        return pairs, knn, (f"faiss {found.kind} index of the layer: each photo's {max(k, INDEX_NEIGHBOURS)} "
                            f"nearest (beyond {INDEX_ROWS:,} photos)"), found.kind
    exact = search == "exact" or (search != "cells" and m <= EXACT_ROWS)
    if exact:
        members = [np.arange(m)]
        listed = members
        how = "exact (blocked matrix products)"
    else:
        members, listed, cells, norms, coarse = _cells(take, m, seed)
        listings = sum(len(rows) for rows in listed) / m
        how = (f"in cells: {cells:,} k-means cells, each photo compared with those listed in its cell, each "
               f"listed in each cell whose cosine is within {LIST_SLACK} of its nearest cell's ({listings:.1f} cells on average)"
               + (f" (beyond {EXACT_ROWS:,} photos)" if m > EXACT_ROWS else "")
               + ("; products in bf16, pairs near the threshold checked in float32" if coarse is not None else ""))
    pairs, knn = {}, np.zeros(m, dtype=np.float32)
    if exact:
        _compare_all(take, m, threshold, k, budget_bytes, pairs, knn)
    for members_of_cell, candidates in ([] if exact else zip(members, listed)):
        if len(members_of_cell) and coarse is not None:
            _compare_coarse(coarse, take, norms, m, members_of_cell, candidates, threshold, k, budget_bytes,
                            pairs, knn)
        elif len(members_of_cell):
            _compare(take, m, members_of_cell, candidates, threshold, k, budget_bytes, pairs, knn, norms)
    ranked = sorted(((i, j, s) for (i, j), s in pairs.items()), key=lambda p: -p[2])[:PAIRS_CAP]
    return ranked, knn, how, "exact" if exact else "cells"


def _index_neighbours(take, m, index, cache_rows, threshold, k, budget_bytes, spread) -> tuple:
    """(pairs, knn) as neighbours gives them, from the index's nearest of each of the m rows (read
    through ``take``, queried a batch at a time; ``cache_rows[i]``: row i's row in the cache, which
    the index never answers it with). Answers that are none of the m rows are passed over."""
    from ..index import REFINE, REFINE_MIN
    position = np.full(int(max(cache_rows.max(), 0)) + 1, -1, dtype=np.int64)
    position[cache_rows] = np.arange(m)
    nearest = min(k, m - 1)
    asked = max(nearest, INDEX_NEIGHBOURS)
    want = asked * spread + spread - 1  # a photo's own views and its neighbours' may come first
    candidates = max(want * REFINE, REFINE_MIN) if index.kind == "ivfpq" else want  # ranked exactly per query
    width = take(np.arange(1)).shape[1]
    batch = int(max(64, min(INDEX_BATCH, budget_bytes // (4 * width * (candidates + 4)))))
    knn = np.zeros(m, dtype=np.float32)
    found_a, found_b, found_s = [], [], []
    for start in range(0, m, batch):
        mine = np.arange(start, min(m, start + batch))
        answers, cosines = index.search(take(mine), want, exclude=cache_rows[mine], budget_bytes=budget_bytes)
        inside = (answers >= 0) & (answers < len(position))
        at = np.where(inside, position[np.where(inside, answers, 0)], -1)
        cosines = np.where(at >= 0, cosines, -np.inf)
        if want > asked:  # keep each row's first ``asked`` answers among the m rows, best first
            order = np.argsort(at < 0, axis=1, kind="stable")[:, :asked]
            at, cosines = np.take_along_axis(at, order, axis=1), np.take_along_axis(cosines, order, axis=1)
        # the missing neighbours (fewer answers than k) count as orthogonal: distance 1
        distance = np.where(np.isfinite(cosines[:, :nearest]), 1.0 - cosines[:, :nearest], 1.0)
        knn[mine] = distance.sum(axis=1) / max(1, nearest) if nearest else 0.0
        a, b = np.nonzero(cosines >= threshold)
        found_a.append(mine[a])
        found_b.append(at[a, b])
        found_s.append(cosines[a, b])
    a, b, s = (np.concatenate(found) for found in (found_a, found_b, found_s))
    low, high = np.minimum(a, b), np.maximum(a, b)
    order = np.lexsort((-s, high, low))  # each pair once (found from either side): its higher cosine
    low, high, s = low[order], high[order], s[order]
    first = np.ones(len(low), dtype=bool)
    first[1:] = (low[1:] != low[:-1]) | (high[1:] != high[:-1])
    low, high, s = low[first], high[first], s[first]
    closest = np.argsort(-s, kind="stable")[:PAIRS_CAP]
    return list(zip(low[closest].tolist(), high[closest].tolist(), s[closest].tolist())), knn


def _compare(take, m, rows, candidates, threshold, k, budget_bytes, pairs, knn, norms=None):
    """Every row of ``rows`` against every row of ``candidates`` (both sorted row numbers, rows a
    subset of candidates; ``take`` reads codes by row number, of ``m``): pairs at or above the
    threshold into ``pairs``, each row's mean distance to its k nearest candidates into ``knn``.
    ``norms``: every row's norm as unit() divides by, when known (each row sits in several cells:
    measured once, not per cell; the same unit rows)."""
    if norms is None:
        Q = unit_blocks(take, candidates)
    else:  # the gathered rows divided in place: no second copy, no norm per cell
        Q = np.asarray(take(candidates), dtype=np.float32)
        np.divide(Q, norms[candidates, None], out=Q)
    block = max(1, min(len(rows), budget_bytes // max(1, len(candidates) * 4 * 2)))
    nearest = min(k, len(candidates) - 1)
    # A cell with fewer than k other rows: the missing neighbours count as orthogonal (distance 1),
    # as far as the search can tell (a cache of fewer than k + 1 rows just has fewer).
    missing = k - nearest if len(candidates) < m else 0
    for start in range(0, len(rows), block):
        chunk = rows[start:start + block]
        at = np.searchsorted(candidates, chunk)  # the chunk's places among the candidates
        S = Q[at] @ Q.T
        S[np.arange(len(chunk)), at] = -np.inf  # a row is not its own neighbour
        a, b = _where(S >= threshold)
        for i, j, s in zip(chunk[a].tolist(), candidates[b].tolist(), S[a, b].tolist()):
            pairs[min(i, j), max(i, j)] = s
        if nearest:  # S partitioned in place once its pairs are read (np.partition would copy it first)
            S.partition(S.shape[1] - nearest, axis=1)
        top = S[:, S.shape[1] - nearest:] if nearest else S[:, :0]
        knn[chunk] = _mean_distance(top, missing)
        _keep_closest(pairs)


def _compare_coarse(coarse, take, norms, m, rows, candidates, threshold, k, budget_bytes, pairs, knn):
    """_compare's work from the rows' bf16 unit codes (``coarse``, a torch tensor of every row):
    products in bf16, each pair within COARSE_MARGIN of the threshold checked in float32 from the
    codes (``take``, ``norms``), so that only pairs at or above it, with their float32 cosines,
    are kept; each row's k nearest from the bf16 products."""
    import torch
    n = len(candidates)
    # Shapes padded to a few sizes: oneDNN compiles a kernel for each shape of bf16 product it meets
    # (~9 ms each, 2,000 cells of as many shapes: 18 s at a million rows), and reuses it after.
    Q = torch.empty((_padded(n, PAD_COLUMNS), coarse.shape[1]), dtype=coarse.dtype)
    torch.index_select(coarse, 0, torch.from_numpy(candidates), out=Q[:n])
    Q[n:] = 0
    block = max(1, min(len(rows), PRODUCT_ROWS, budget_bytes // max(1, len(Q) * 2 * 2)))
    nearest = min(k, len(candidates) - 1)
    missing = k - nearest if len(candidates) < m else 0  # as _compare counts them
    low = threshold - COARSE_MARGIN  # rounded to bf16 in the comparison: within the margin's slack
    ranks = min(max(nearest, PAIR_RANKS), len(candidates))
    for start in range(0, len(rows), block):
        chunk = rows[start:start + block]
        at = torch.from_numpy(np.searchsorted(candidates, chunk))  # the chunk's places among the candidates
        A = Q.new_zeros((_padded(len(chunk), PAD_ROWS), Q.shape[1]))
        A[:len(chunk)] = Q[at]
        S = (A @ Q.T)[:len(chunk)]
        S[:, n:] = -torch.inf  # the padding's columns
        S[torch.arange(len(chunk)), at] = -torch.inf  # a row is not its own neighbour
        # One pass over the scores: each row's best few give its k nearest and, unless its last
        # reaches the margin (a row with many near copies: its whole row read), its near pairs.
        top = torch.topk(S, ranks, dim=1)
        near_a, near_b = np.nonzero(top.values.float().numpy() >= low)
        crowded = np.unique(near_a[near_b == ranks - 1])
        near_b = top.indices.numpy()[near_a, near_b]
        if len(crowded):
            crowded_a, crowded_b = torch.nonzero(S[torch.from_numpy(crowded)] >= low).numpy().T
            keep = ~np.isin(near_a, crowded)
            near_a = np.concatenate([near_a[keep], crowded[crowded_a]])
            near_b = np.concatenate([near_b[keep], crowded_b])
        if len(near_a):
            a, b = chunk[near_a], candidates[near_b]
            for i, j, s in zip(a.tolist(), b.tolist(), _float32_cosines(take, norms, a, b).tolist()):
                if s >= threshold:
                    pairs[min(i, j), max(i, j)] = s
        knn[chunk] = _mean_distance(top.values[:, :nearest].float().numpy(), missing)
        _keep_closest(pairs)


def _mean_distance(best, missing) -> np.ndarray:
    """Each row's mean cosine distance to its nearest, from their scores ``best`` [rows, nearest],
    with ``missing`` more neighbours (a cell with fewer than k other rows) counted as orthogonal."""
    return ((1.0 - best).sum(axis=1) + missing) / max(1, best.shape[1] + missing)


def _padded(n, step) -> int:
    return -(-n // step) * step


def _float32_cosines(take, norms, a, b) -> np.ndarray:
    """The float32 cosine of each pair of rows (a[i], b[i]), as the float32 search has it: the
    codes divided by their norms, then their product."""
    rows, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    U = np.asarray(take(rows), dtype=np.float32)
    np.divide(U, norms[rows, None], out=U)
    return np.einsum("ij,ij->i", U[inverse[:len(a)]], U[inverse[len(a):]])


def _compare_all(take, m, threshold, k, budget_bytes, pairs, knn):
    """Every pair of the m rows once: the blocks of the upper triangle of the cosine matrix, each
    feeding the pairs and the k nearest of both its rows and its columns (half the products of
    comparing every row with every row). A row's running k nearest change rarely once the scan is
    under way, so a block is merged only where it beats a row's current k-th nearest."""
    Q = unit_blocks(take, np.arange(m))
    nearest = min(k, m - 1)
    best = np.full((m, max(nearest, 1)), -np.inf, dtype=np.float32)  # each row's k best cosines, unsorted
    side = max(1, min(m, int(np.sqrt(budget_bytes / (4 * 3)))))  # a block, its mask and a merge's copy
    # One block and one mask, reused: a fresh product per block cost a page fault per page.
    scores, mask = np.empty(side * side, dtype=np.float32), np.empty(side * side, dtype=bool)
    for i0 in range(0, m, side):
        A = Q[i0:i0 + side]
        for j0 in range(i0, m, side):
            B = Q[j0:j0 + side]
            S = np.matmul(A, B.T, out=scores[:len(A) * len(B)].reshape(len(A), len(B)))
            M = mask[:S.size].reshape(S.shape)
            if i0 == j0:
                np.fill_diagonal(S, -np.inf)  # a row is not its own neighbour
            if S.max() < threshold:  # most blocks hold no pair: one reduction instead of a mask and its scan
                a = b = np.zeros(0, dtype=np.int64)
            else:
                a, b = _where(np.greater_equal(S, threshold, out=M))
            if i0 == j0:
                a, b = a[a < b], b[a < b]  # the block is symmetric: each pair once
            for i, j, cosine in zip((i0 + a).tolist(), (j0 + b).tolist(), S[a, b].tolist()):
                pairs[i, j] = cosine
            if nearest:
                _merge_best(best, i0, S, M)
                if i0 != j0:
                    _merge_best(best, j0, S, M, axis=0)
        _keep_closest(pairs)
    knn[:] = (1.0 - best[:, :nearest]).sum(axis=1) / max(1, nearest) if nearest else 0.0


def _keep_closest(pairs) -> None:
    """Past twice PAIRS_CAP found, only the PAIRS_CAP closest pairs are kept (memory stays bounded)."""
    if len(pairs) > 2 * PAIRS_CAP:
        kept = sorted(pairs.items(), key=lambda p: -p[1])[:PAIRS_CAP]
        pairs.clear()
        pairs.update(kept)


def _where(mask) -> tuple:
    """(rows, columns) of the True entries of a 2-D mask: flat indices, faster than np.nonzero
    on a mostly False mask of a block's size."""
    return np.divmod(np.flatnonzero(mask), mask.shape[1])


def _merge_best(best, start, S, mask, axis=1):
    """The rows of ``best`` (each row's k best so far) from ``start`` merged with the scores ``S``:
    of those rows (axis 1: a row of S per row) or of the columns (axis 0: a column of S per row,
    read in place rather than from a transposed copy). Only the scores that beat a row's current
    k-th best are gathered (few, once a row has seen a block or two); each touched row keeps its k
    best. ``mask``: a buffer of S's shape."""
    mine = best[start:start + S.shape[1 - axis]]
    k = mine.shape[1]
    kth = mine.min(axis=1)
    beats = np.greater(S, kth[:, None] if axis == 1 else kth[None, :], out=mask)
    hits = np.count_nonzero(beats)
    if not hits:
        return
    if hits > 4 * k * len(mine):  # early in the scan most scores beat: the k best of whole rows
        import torch  # its top-k reads a block several times faster than np.partition
        top = torch.topk(torch.from_numpy(S), min(k, S.shape[axis]), dim=axis).values.numpy()
        merged = np.concatenate([mine, top if axis == 1 else top.T], axis=1)
        mine[:] = np.partition(merged, merged.shape[1] - k, axis=1)[:, merged.shape[1] - k:]
        return
    first_index, second_index = _where(beats)
    values = S[first_index, second_index]
    rows = first_index if axis == 1 else second_index
    touched = np.unique(rows)
    at = np.searchsorted(touched, rows)
    owner = np.concatenate([np.repeat(np.arange(len(touched)), k), at])
    values = np.concatenate([mine[touched].ravel(), values])
    order = np.lexsort((-values, owner))  # by row, best first; each row has its k old ones at least
    first = np.searchsorted(owner[order], np.arange(len(touched)))
    mine[touched] = values[order[first[:, None] + np.arange(k)]]


def _cells(take, m, seed) -> tuple:
    """(rows living in each cell, rows listed in each cell, number of cells, each row's norm as
    unit() divides by, every row's unit code in bf16 as a torch tensor where the CPU computes bf16
    in hardware, else None): k-means on a sample of normalised rows, then each row's nearest
    centroids (up to LIST_MOST, nearest first): its home among the first PROBE, its listings by
    LIST_SLACK."""
    import torch

    from ...cpu_features import native_bf16
    bf16 = native_bf16()
    cells = _cell_count(m)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(m, size=min(m, cells * SAMPLE_PER_CELL), replace=False))
    sampled = normalised(take(sample))
    C = _spherical_kmeans(sampled, cells, seed, torch.bfloat16 if bf16 else torch.float32)
    # Hub centroids (near a class's mean: closer to every member than a centroid of a few photos)
    # would draw many times the mean cell, and a cell costs its rows times the rows listed in it.
    # Ranked by cosine less each centroid's mean cosine to its nearest sampled rows (after CSLS's
    # local scaling, Conneau et al. 2018), a hub pays for its popularity: with it and the homes'
    # capacity, the work falls (docs/benchmarks.md has the figures).
    sample_scores = torch.from_numpy(sampled) @ torch.from_numpy(C).T
    hub_rows = min(len(sample), HUB_NEIGHBOURS)
    popularity = torch.topk(sample_scores, hub_rows, dim=0).values.mean(dim=0).numpy()  # np.partition: 10x slower
    del sampled, sample_scores
    coarse = torch.empty((m, C.shape[1]), dtype=torch.bfloat16) if bf16 else None
    centroids = torch.from_numpy(np.ascontiguousarray(C.T))
    centroids = centroids.to(torch.bfloat16) if coarse is not None else centroids
    popularity = torch.from_numpy(popularity.astype(np.float32))
    ranked = min(cells, max(LIST_MOST, PROBE))
    nearest = np.empty((m, ranked), dtype=np.int64)
    affinity = np.empty((m, ranked), dtype=np.float32)
    norms = np.empty(m, dtype=np.float32)
    for start in range(0, m, NORM_BLOCK):
        stop = min(m, start + NORM_BLOCK)
        block = np.asarray(take(np.arange(start, stop)), dtype=np.float32)
        norms[start:stop] = row_norms(block)
        unit_block = torch.from_numpy(np.divide(block, norms[start:stop, None], out=block))
        if coarse is not None:  # the unit rows kept in bf16 for the cells' products; their cells found in bf16
            coarse[start:stop] = unit_block
            unit_block = coarse[start:stop]
        scores = (unit_block @ centroids).float() - popularity
        top = torch.topk(scores, ranked, dim=1)  # the nearest, nearest first
        nearest[start:stop], affinity[start:stop] = top.indices.numpy(), top.values.numpy()
    home = _homes(nearest[:, :PROBE], affinity[:, :PROBE], cells, capacity=BALANCE * -(-m // cells))
    listed = (affinity >= affinity[:, :1] - LIST_SLACK) | (np.arange(ranked) < LIST_LEAST) | (nearest == home[:, None])
    owners = np.broadcast_to(np.arange(m)[:, None], nearest.shape)
    return (_group(home, cells), _group(nearest[listed], cells, owners[listed]), cells, norms,
            coarse)


def _spherical_kmeans(sampled, cells, seed, dtype) -> np.ndarray:
    """Unit centroids [cells, D] of the unit rows ``sampled``: Lloyd's iterations on the cosine from
    random rows (k-means++ seeding took 16x longer), KMEANS_ITERATIONS of them, the products in
    ``dtype`` (bf16 where the CPU has it: scikit-learn's KMeans computes in float32 only, several
    times slower on such a CPU), the means in float32. A cell left empty keeps its centroid."""
    import torch
    rows = torch.from_numpy(sampled)
    products = rows.to(dtype)
    start = np.random.default_rng(seed).choice(len(sampled), size=cells, replace=False)
    centroids = rows[torch.from_numpy(start)].clone()
    for _ in range(KMEANS_ITERATIONS):
        assigned = torch.max(products @ centroids.to(dtype).T, dim=1).indices  # argmax's first index; 4x faster on bf16
        sums = torch.zeros_like(centroids).index_add_(0, assigned, rows)
        counts = torch.bincount(assigned, minlength=cells)
        filled = counts > 0
        centroids[filled] = sums[filled] / torch.linalg.vector_norm(sums[filled], dim=1, keepdim=True).clamp_min(1e-12)
    return centroids.numpy()


def _cell_count(m) -> int:
    """Cells for m rows: the cost of listing rows in cells (rows x cells) against that of comparing
    them (rows x PROBE x rows per cell)."""
    return int(round(np.sqrt(PROBE * m)))


def _homes(nearest, affinity, cells, capacity) -> np.ndarray:
    """Each row's home: the nearest of its listed cells that has room (``capacity`` rows), the
    closest rows first, so that no cell is home to a crowd; rows that every listed cell turned
    away live in their nearest."""
    m = len(nearest)
    home = np.full(m, -1, dtype=np.int64)
    room = np.full(cells, capacity, dtype=np.int64)
    for choice in range(nearest.shape[1]):
        waiting = np.flatnonzero(home < 0)
        cell = nearest[waiting, choice]
        order = np.lexsort((-affinity[waiting, choice], cell))  # by cell, the closest first
        waiting, cell = waiting[order], cell[order]
        first = np.searchsorted(cell, cell)  # where each row's cell starts in this order
        admitted = np.arange(len(cell)) - first < room[cell]
        home[waiting[admitted]] = cell[admitted]
        np.subtract.at(room, cell[admitted], 1)
    home[home < 0] = nearest[home < 0, 0]
    return home


def _group(cell_of, cells, rows=None) -> list:
    """For each cell, the sorted rows whose entry names it."""
    rows = np.arange(len(cell_of)) if rows is None else rows
    order = np.lexsort((rows, cell_of))
    bounds = np.searchsorted(cell_of[order], np.arange(cells + 1))
    return [rows[order[bounds[c]:bounds[c + 1]]] for c in range(cells)]
