"""`similar`: the k nearest photos of a cache to a query, exactly, within the memory budget."""
import json
import shutil

import numpy as np
import pytest

import cnncodes
from conftest import make_folder, run_cli

LITE = ["--backbone", "efficientnet_lite0", "--crop-size", "64", "--no-progress", "--workers", "0"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("similar")
    make_folder(str(root / "images"), per_class=7)
    run_cli("extract", root / "images", "--cache", root / "c.h5", *LITE)
    return root, root / "c.h5"


def _brute_force(cache_path, row, k):
    with cnncodes.open_cache(cache_path) as c:
        X = c.codes(c.first_layer)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    scores = X @ X[row]
    scores[row] = -np.inf
    order = np.lexsort((np.arange(len(X)), -scores))[:k]
    return order, scores[order]


def test_a_cached_query_gets_the_exact_k_nearest_without_itself(cache):
    root, path = cache
    with cnncodes.open_cache(path) as c:
        paths = c.paths
    (result,) = cnncodes.similar(path, [paths[5]], k=6)
    rows, scores = _brute_force(path, 5, 6)
    assert [n["row"] for n in result["neighbours"]] == rows.tolist() and result["source"] == "cache"
    np.testing.assert_allclose([n["score"] for n in result["neighbours"]], scores, atol=1e-5)
    assert all(n["path"] == paths[n["row"]] and n["label"] in ("red", "green", "blue") for n in result["neighbours"])
    # streamed a few rows at a time: the same answer
    (tight,) = cnncodes.similar(path, [paths[5]], k=6, max_memory="1M")
    assert tight["neighbours"] == result["neighbours"]
    (everything,) = cnncodes.similar(path, [paths[5]], k=100)
    assert len(everything["neighbours"]) == len(paths) - 1  # every other row, no padding


def test_an_image_outside_the_cache_is_encoded_and_finds_its_copy(cache, tmp_path):
    root, path = cache
    with cnncodes.open_cache(path) as c:
        original = c.paths[9]
    copy = tmp_path / "copy.jpg"
    shutil.copy(root / "images" / original, copy)
    out = run_cli("similar", path, copy, "-k", "3", "--json", "--sheet", tmp_path / "sheet.png")
    (result,) = json.loads(out.stdout)
    assert result["source"] == "image" and result["neighbours"][0]["path"] == original
    assert result["neighbours"][0]["score"] > 0.999 and (tmp_path / "sheet.png").stat().st_size > 5000


def test_bad_queries_are_one_line_each_and_search_nothing(cache, tmp_path):
    _, path = cache
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    for query, words in ((tmp_path / "nowhere.jpg", "neither a path in"), (broken, "cannot be read as an image")):
        out = run_cli("similar", path, query, check=False)
        assert out.returncode == 2 and words in out.stderr and out.stderr.strip().count("\n") == 0
