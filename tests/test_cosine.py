"""The cosine engine (classify/cosine.py) on its own: the exact top-k against a plain reference, on
blocks large enough to be shared among threads, with rows of any scale, zero rows and exclusions;
the same answers from one thread, from several, and from numpy 1's einsum; and a search in a
child forked after the parent's threads were made."""
import multiprocessing
import threading

import numpy as np
import pytest

from cnncodes.classify import cosine


def _rows(n, width, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (n, width)).astype(np.float32) * rng.uniform(0.01, 50, (n, 1)).astype(np.float32)
    X[7] = 0  # a zero row: cosine 0 with everything
    X[n // 2] = X[3] * 9  # a copy of row 3 at another scale: cosine 1
    return X


def _reference(Q, X, k, exclude):
    """Cosines in float64, ranked best first, ties by the lower row."""
    Xn = X / np.maximum(np.linalg.norm(X.astype(np.float64), axis=1), 1e-12)[:, None]
    Qn = Q / np.linalg.norm(Q.astype(np.float64), axis=1)[:, None]
    S = Qn @ Xn.T
    for i, row in enumerate(exclude):
        if row >= 0:
            S[i, row] = -np.inf
    order = np.lexsort((np.broadcast_to(np.arange(len(X)), S.shape), -S), axis=1)[:, :k]
    return order, np.take_along_axis(S, order, axis=1)


def _agree(found, scores, truth, truth_scores):
    assert np.allclose(scores, truth_scores, atol=2e-5)
    # rows may differ only where two cosines are equal within float32 rounding
    differ = found != truth
    assert np.allclose(scores[differ], truth_scores[differ], atol=2e-5)
    assert (found == truth).mean() > 0.99


@pytest.mark.parametrize("n_queries", [1, 3, 8, 9, 40])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_top_k_equals_the_reference_on_one_thread_and_several(monkeypatch, n_queries, threads):
    monkeypatch.setattr(cosine, "_cores", lambda: threads)
    X = _rows(20000, 48)
    rows = np.arange(0, 20000, 20000 // n_queries)[:n_queries]
    Q = X[rows] + 0.01
    exclude = np.where(np.arange(n_queries) % 2 == 0, rows, -1)
    found, scores = cosine.top_k(Q, cosine.array_blocks(X, n_queries, 1 << 30), 10, exclude)
    _agree(found, scores, *_reference(Q, X, 10, exclude))
    assert not (found == exclude[:, None]).any()


def test_a_large_block_is_shared_among_threads_and_a_small_one_is_not(monkeypatch):
    monkeypatch.setattr(cosine, "_cores", lambda: 2)
    seen = []
    scan = cosine._scan

    def recording(start, stop, *args):
        seen.append((threading.current_thread().name, stop - start))
        return scan(start, stop, *args)

    monkeypatch.setattr(cosine, "_scan", recording)
    X = _rows(cosine.MAX_BLOCK_ROWS, 16)
    for n_queries in (1, 20):
        seen.clear()
        cosine._cosines(cosine.unit(X[:n_queries]), X)
        assert sorted(n for _, n in seen) == [cosine.MAX_BLOCK_ROWS // 2] * 2
        assert any(name.startswith("cnncodes-cosine") for name, _ in seen)
    seen.clear()
    cosine._cosines(cosine.unit(X[:1]), X[:2 * cosine.SLICE_ROWS - 1])  # too few rows to share
    assert [n for _, n in seen] == [2 * cosine.SLICE_ROWS - 1]


def test_numpy_1s_einsum_gives_the_same_answers_on_one_thread(monkeypatch):
    X = _rows(12000, 24, seed=2)
    Q = X[[5, 600, 11000]] * 0.5
    truth = cosine.top_k(Q, cosine.array_blocks(X, 3, 1 << 30), 5)
    monkeypatch.setattr(cosine, "_dot", cosine._einsum_dot)
    monkeypatch.setattr(cosine, "_RELEASES_GIL", False)
    found, scores = cosine.top_k(Q, cosine.array_blocks(X, 3, 1 << 30), 5)
    assert np.array_equal(found, truth[0]) and np.allclose(scores, truth[1], atol=1e-6)


def _search_in_child(X, out):
    found, _ = cosine.top_k(X[:1], cosine.array_blocks(X, 1, 1 << 30), 3)
    out.put(found.tolist())


def test_a_child_forked_after_the_threads_were_made_still_searches(monkeypatch):
    """A pool made before a fork has no threads in the child: work submitted to it would wait forever."""
    monkeypatch.setattr(cosine, "_cores", lambda: 2)
    X = _rows(8192, 16, seed=3)
    parent, _ = cosine.top_k(X[:1], cosine.array_blocks(X, 1, 1 << 30), 3)
    assert cosine._pools  # the parent's threads exist
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_search_in_child, args=(X, out))
    child.start()
    child.join(60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the forked child's search never finished"
    assert out.get(timeout=5) == parent.tolist()
