"""`audit --search index` beyond its exact size takes each photo's nearest from the cache's faiss
index (`cnncodes index`): on a small synthetic cache with planted copies, the index path (forced by
lowering near_pairs.INDEX_ROWS) finds the pairs and outliers the exact search finds, says which
search it used, and without faiss or an index the audit is exact as before."""
import json
import sys

import numpy as np
import pytest

import cnncodes
from cnncodes.cache import Fingerprint, open_for_append
from cnncodes.classify.audit import near_pairs
from conftest import run_cli

faiss = pytest.importorskip("faiss", reason="faiss-cpu is the optional extra [index]")

WIDTH = 32
NAMES = ["a", "b", "c"]
N = 1200
THRESHOLD = 0.98


def _codes(n, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (40, WIDTH)).astype(np.float32)
    X = centres[rng.integers(0, 40, n)] + rng.normal(0, 0.35, (n, WIDTH)).astype(np.float32)
    X[n // 2:n // 2 + 20] = X[:20] + rng.normal(0, 0.01, (20, WIDTH))  # planted copies: row i + n/2 ~ row i
    return np.abs(X)


def _add(cache, X, first=0):
    fingerprint = Fingerprint(backbone="synthetic", layers=("pool",), weights="random:0", preprocess={"crop": 224})
    splits = np.random.default_rng(first).choice(["train", "val"], len(X), p=[0.8, 0.2])
    with open_for_append(cache, fingerprint, {"pool": WIDTH}, NAMES, background=False) as session:
        for start in range(0, len(X), 400):
            rows = range(start, min(len(X), start + 400))
            session.add_rows([f"{NAMES[i % 3]}/{first + i:06d}.jpg" for i in rows],
                             [f"{first + i:064x}" for i in rows], list(splits[start:start + 400]),
                             [NAMES[i % 3] for i in rows], [(1, 1, first + i) for i in rows],
                             {"pool": X[start:start + 400]})
            session.commit_shard()


def _pairs(report):
    return {tuple(sorted(r["path"] for r in p["rows"])) for p in report.near_duplicates}


def _outliers(report):
    return {r["path"]: r["knn_distance"] for r in report.outliers}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("audit_index") / "c.h5")
    _add(path, _codes(N))
    return path


@pytest.fixture(scope="module")
def exact(cache):
    report = cnncodes.audit(cache, threshold=THRESHOLD, limit=1000)
    assert report.search_kind == "exact" and report.search.startswith("exact")
    planted = {(f"{NAMES[i % 3]}/{i:06d}.jpg", f"{NAMES[(i + N // 2) % 3]}/{i + N // 2:06d}.jpg") for i in range(20)}
    assert planted <= {tuple(sorted(p, key=lambda q: q.split("/")[1])) for p in _pairs(report)}
    return report


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_the_index_finds_what_the_exact_search_finds(cache, exact, kind, monkeypatch):
    cnncodes.index(cache, kind=kind, rebuild=True)
    # at the exact size the index is not asked, and the default search never asks it
    assert cnncodes.audit(cache, threshold=THRESHOLD, search="index").search_kind == "exact"
    monkeypatch.setattr(near_pairs, "INDEX_ROWS", 100)
    assert cnncodes.audit(cache, threshold=THRESHOLD).search_kind == "exact"
    report = cnncodes.audit(cache, threshold=THRESHOLD, limit=1000, search="index")
    assert report.search_kind == kind and report.search.startswith(f"faiss {kind} index")
    assert _pairs(report) == _pairs(exact)
    assert report.counts == exact.counts and report.leaked == exact.leaked and report.exclude == exact.exclude
    ours, theirs = _outliers(report), _outliers(exact)
    if kind == "flat":  # exact too: the same distances, to rounding
        assert ours.keys() == theirs.keys()
        assert max(abs(ours[p] - theirs[p]) for p in ours) <= 2e-4
    else:  # an approximate search never finds nearer neighbours, and finds nearly all of them
        shared = ours.keys() & theirs.keys()
        assert len(shared) >= 0.9 * len(theirs)
        assert all(ours[p] >= theirs[p] - 2e-4 for p in shared)
    # the JSON and the summary say which search
    printed = json.loads(run_cli("audit", cache, "--json", "--threshold", str(THRESHOLD), "--search", "index").stdout)
    assert printed["search_kind"] == kind and printed["search"] == report.search
    said = run_cli("audit", cache, "--threshold", str(THRESHOLD), "--search", "index").stdout
    assert f"near-pair search: faiss {kind} index" in said


def test_rows_committed_after_the_index_are_searched_too(tmp_path, monkeypatch):
    path = str(tmp_path / "c.h5")
    X = _codes(N, seed=1)
    _add(path, X)
    cnncodes.index(path, kind="flat")
    copies = X[30:40] + np.random.default_rng(2).normal(0, 0.01, (10, WIDTH)).astype(np.float32)
    _add(path, np.abs(copies), first=N)  # committed after the index: copies of rows 30..39
    monkeypatch.setattr(near_pairs, "INDEX_ROWS", 100)
    report = cnncodes.audit(path, threshold=THRESHOLD, limit=1000, search="index")
    assert report.search_kind == "flat" and report.photos == N + 10
    pairs = _pairs(report)
    for i in range(10):
        assert tuple(sorted([f"{NAMES[(30 + i) % 3]}/{30 + i:06d}.jpg", f"{NAMES[i % 3]}/{N + i:06d}.jpg"])) in pairs
    monkeypatch.setattr(near_pairs, "INDEX_ROWS", 10 ** 9)
    assert _pairs(cnncodes.audit(path, threshold=THRESHOLD)) == pairs


def test_without_faiss_the_audit_is_exact_as_before(cache, exact, monkeypatch):
    cnncodes.index(cache, kind="flat", rebuild=True)
    monkeypatch.setattr(near_pairs, "INDEX_ROWS", 100)
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError, as uninstalled
    report = cnncodes.audit(cache, threshold=THRESHOLD, limit=1000, search="index")
    assert report.search_kind == "exact" and report.search.endswith("(search=index: faiss is not installed)")
    assert _pairs(report) == _pairs(exact) and _outliers(report) == _outliers(exact)
    assert report.counts == exact.counts


def test_without_an_index_the_audit_is_exact_as_before(tmp_path, exact, monkeypatch):
    path = str(tmp_path / "c.h5")
    _add(path, _codes(N))  # the same codes, never indexed
    monkeypatch.setattr(near_pairs, "INDEX_ROWS", 100)
    report = cnncodes.audit(path, threshold=THRESHOLD, limit=1000, search="index")
    assert report.search_kind == "exact" and report.counts == exact.counts
    assert report.search.endswith("(search=index: the cache has no index of pool (`cnncodes index`))")
    assert _outliers(report) == _outliers(exact)


def test_the_cells_and_exact_searches_can_be_chosen(cache, exact):
    cells = cnncodes.audit(cache, threshold=THRESHOLD, limit=1000, search="cells")
    assert cells.search_kind == "cells" and cells.search.startswith("in cells: ")
    assert _pairs(cells) == _pairs(exact)
    from cnncodes.classify.errors import ClassifyError
    with pytest.raises(ClassifyError, match="search='nearest': choose auto, exact, cells, index"):
        cnncodes.audit(cache, search="nearest")
