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
    from PIL import Image
    copy = tmp_path / "copy.png"  # the same pixels in other bytes: a new image to encode
    Image.open(root / "images" / original).save(copy)
    out = run_cli("similar", path, copy, "-k", "3", "--json", "--sheet", tmp_path / "sheet.png")
    (result,) = json.loads(out.stdout)["queries"]
    assert result["source"] == "image" and result["neighbours"][0]["path"] == original
    assert result["neighbours"][0]["score"] > 0.999 and (tmp_path / "sheet.png").stat().st_size > 5000
    # The same bytes anywhere on disk are the cached photo: its cached codes, and it never answers itself.
    same = tmp_path / "same.jpg"
    shutil.copy(root / "images" / original, same)
    (result,) = json.loads(run_cli("similar", path, same, "-k", "3", "--json").stdout)["queries"]
    assert result["source"] == "cache" and original not in [n["path"] for n in result["neighbours"]]


def test_bad_queries_are_one_line_each_and_search_nothing(cache, tmp_path):
    _, path = cache
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    for query, words in ((tmp_path / "nowhere.jpg", "neither a path in"), (broken, "cannot be read as an image")):
        out = run_cli("similar", path, query, check=False)
        assert out.returncode == 2 and words in out.stderr and out.stderr.strip().count("\n") == 0


def test_a_text_query_uses_the_same_open_clip_models_text_tower(tmp_path):
    """Weights from a FILE (a seeded CLIP checkpoint): the answers' scores are the cosines between
    open_clip's own encode_text and the cached image embeddings."""
    open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is the optional extra [zoo]")
    import torch
    torch.manual_seed(3)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    make_folder(str(tmp_path / "images"), per_class=2)
    run_cli("extract", tmp_path / "images", "--cache", tmp_path / "c.h5", "--backbone", "open_clip:ViT-B-32/openai",
            "--weights", tmp_path / "clip.pt", "--layer", "embedding", "--dtype", "float32", "--precision", "fp32",
            "--workers", "0", "--no-progress")
    out = run_cli("similar", tmp_path / "c.h5", "--text", "a red square", "--weights", tmp_path / "clip.pt",
                  "-k", "6", "--json")
    (result,) = json.loads(out.stdout)["queries"]
    assert result["source"] == "text" and len(result["neighbours"]) == 6
    with torch.no_grad():
        phrase = model.encode_text(open_clip.get_tokenizer("ViT-B-32")(["a red square"]))[0].numpy()
    with cnncodes.open_cache(tmp_path / "c.h5") as c:
        codes, paths = c.codes("embedding"), c.paths
    expected = codes @ phrase / np.linalg.norm(codes, axis=1) / np.linalg.norm(phrase)
    for n in result["neighbours"]:
        assert n["score"] == pytest.approx(expected[paths.index(n["path"])], abs=1e-4)
    np.testing.assert_allclose([n["score"] for n in result["neighbours"]], sorted(expected, reverse=True)[:6],
                               atol=1e-4)  # the six best, best first
    refused = run_cli("similar", tmp_path / "c.h5", "--text", "a red square", check=False)  # no --weights FILE
    assert refused.returncode == 2 and "--weights" in refused.stderr
