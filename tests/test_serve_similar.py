"""serve's POST /similar: an uploaded photo -> the k nearest rows of a codes cache, by the codes the
exported graph's second output gives (the model's layer, as the cache stores it), searched with the
one cosine engine (exact, or the cache's faiss index). Driven through aiohttp's test client."""
import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_cli

pytest.importorskip("onnxruntime", reason="deployment is the optional extra: pip install -e '.[deploy]'")
pytest.importorskip("aiohttp")
DEMO = os.path.join(ROOT, "cnncodes", "demo_data", "flowers")
LITE = ("--backbone", "efficientnet_lite0", "--precision", "fp32", "--no-progress", "--workers", "0")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Lite0 (the real weights) avgpool codes of the shipped train photos, a logreg fitted on them,
    exported; the val photos are the queries (the cache does not hold them)."""
    root = tmp_path_factory.mktemp("similar")
    cache = str(root / "lite.h5")
    run_cli("extract", os.path.join(DEMO, "train"), "--cache", cache, *LITE, "--layer", "avgpool")
    model = str(root / "m.npz")
    run_cli("fit", cache, "--classifier", "logreg", "--model", model)
    onnx_path = str(root / "m.onnx")
    run_cli("export-model", model, "--out", onnx_path)
    return root, cache, onnx_path


def _photos(n, split="val"):
    return sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(DEMO, split)) for f in fs)[:n]


def _talk(app, script):
    """Run ``script(client)`` against the app through aiohttp's test server; returns what it returns."""
    from aiohttp.test_utils import TestClient, TestServer

    async def main():
        async with TestClient(TestServer(app)) as client:
            return await script(client)
    return asyncio.run(main())


async def _post(client, url, data, content_type="image/jpeg"):
    response = await client.post(url, data=data, headers={"Content-Type": content_type})
    return response.status, json.loads(await response.text())


def _expected(cache, photos, k, exact=True):
    """What `cnncodes similar` answers for the same photos."""
    import cnncodes
    return cnncodes.similar(cache, photos, k=k, exact=exact)


def _same_neighbours(got, expected, tol=1e-3):
    """The same neighbours, named the same, with scores within ``tol``; two rows whose scores are
    within ``tol`` may change places, and a row within ``tol`` of the k-th score may be another."""
    assert len(got) == len(expected)
    np.testing.assert_allclose([n["score"] for n in got], [n["score"] for n in expected], atol=tol)
    theirs = {n["row"]: n for n in expected}
    last = min(n["score"] for n in expected) + tol
    for n in got:
        if n["row"] in theirs:
            assert {**n, "score": 0} == {**theirs[n["row"]], "score": 0}
            assert abs(n["score"] - theirs[n["row"]]["score"]) <= tol
        else:
            assert n["score"] <= last, (n, expected)
    for n in expected:
        assert n["row"] in {m["row"] for m in got} or n["score"] <= last, (n, got)


def test_similar_answers_what_cnncodes_similar_answers_and_batches(served):
    """Photos the cache holds: similar answers from their cached codes, leaving their own row out;
    /similar from the uploaded bytes, through the graph: its first answer is the photo's own row
    (cosine 1), the others similar's. Photos it does not hold: similar encodes them with the torch
    extractor (in the device's automatic precision: bf16 where the CPU has it, hence 1e-2), and
    the torch path in fp32 gives /similar's neighbours to 1e-3."""
    from cnncodes.cache import open_cache
    from cnncodes.classify.index import nearest_in_cache
    from cnncodes.classify.deploy.serve import make_app
    from cnncodes.extract.by_fingerprint import encode_images
    root, cache, onnx_path = served
    held, photos = _photos(3, "train"), _photos(4)
    bodies = [open(p, "rb").read() for p in held + photos]
    app = make_app(onnx_path, similar=cache, max_wait_ms=100)

    async def script(client):
        answers = await asyncio.gather(*[_post(client, "/similar?k=6", b) for b in bodies],
                                       _post(client, "/predict", bodies[0]))  # a /predict in the same batch
        health = await (await client.get("/health")).json()
        default = await _post(client, "/similar", bodies[0])
        return answers, health, default

    answers, health, default = _talk(app, script)
    for status, body in answers[:-1]:
        assert status == 200, body
        assert body["k"] == 6 and body["layer"] == "avgpool" and body["search"] == "exact" and body["cache"] == cache
        assert len(body["neighbours"]) == 6
    with open_cache(cache) as c:
        own = [c.paths.index(os.path.relpath(p, os.path.join(DEMO, "train"))) for p in held]
    for (_, body), want, row in zip(answers, _expected(cache, held, 5), own):
        assert body["neighbours"][0]["row"] == row and body["neighbours"][0]["score"] > 0.999
        _same_neighbours(body["neighbours"][1:], want["neighbours"])
    for (_, body), want in zip(answers[len(held):-1], _expected(cache, photos, 6)):
        _same_neighbours(body["neighbours"], want["neighbours"], tol=1e-2)
    with open_cache(cache) as c:
        fingerprint = c.fingerprint
    _, codes, _ = encode_images(fingerprint, photos, device="cpu", layer="avgpool", precision="fp32")
    rows, scores, _ = nearest_in_cache(cache, "avgpool", codes.astype(np.float16), 6, 1 << 26, exact=True)
    for (_, body), row_list, score_list in zip(answers[len(held):-1], rows, scores):
        assert [n["row"] for n in body["neighbours"]] == row_list.tolist()
        np.testing.assert_allclose([n["score"] for n in body["neighbours"]], score_list, atol=1e-3)
    assert answers[-1][0] == 200 and answers[-1][1]["label"] in health["classes"]
    assert health["requests"] == 8 and health["batches"] < 8  # the images that arrived together ran together
    assert health["similar"]["searches"] == 7 and health["similar"]["layer"] == "avgpool"
    status, body = default
    assert status == 200 and len(body["neighbours"]) == 12  # k defaults to similar's 12


def test_through_the_faiss_index_and_one_committed_after_start(served, tmp_path):
    """Without an index the search is exact; `cnncodes index` while the service runs: the next
    search goes through it (the same neighbours as similar through it, and as the exact search)."""
    pytest.importorskip("faiss")
    from cnncodes.classify.deploy.serve import make_app
    _, cache, onnx_path = served
    copy = str(tmp_path / "copy.h5")
    run_cli("pack", cache, "--out", copy)  # a cache of its own, for an index of its own
    photos = _photos(3, "train")  # photos the cache holds: the first answer is their own row
    bodies = [open(p, "rb").read() for p in photos]
    app = make_app(onnx_path, similar=copy)

    async def script(client):
        before = [await _post(client, "/similar?k=5", b) for b in bodies]
        await asyncio.get_running_loop().run_in_executor(None, lambda: run_cli("index", copy))
        after = [await _post(client, "/similar?k=5", b) for b in bodies]
        health = await (await client.get("/health")).json()
        return before, after, health

    before, after, health = _talk(app, script)
    exact = _expected(copy, photos, 4)
    indexed = _expected(copy, photos, 4, exact=False)
    assert exact.search == "exact" and indexed.search == "flat"
    for (status, body), (status_after, body_after), want, want_indexed in zip(before, after, exact, indexed):
        assert status == status_after == 200
        assert body["search"] == "exact" and body_after["search"] == "flat"
        assert body["neighbours"][0] == body_after["neighbours"][0] and body["neighbours"][0]["score"] > 0.999
        _same_neighbours(body["neighbours"][1:], want["neighbours"])
        _same_neighbours(body_after["neighbours"][1:], want_indexed["neighbours"])
        _same_neighbours(body_after["neighbours"], body["neighbours"])
    assert health["similar"]["index"] == "flat"


def test_bad_requests_are_one_line_4xx_and_the_service_goes_on(served):
    from cnncodes.classify.deploy.serve import make_app
    _, cache, onnx_path = served
    body = open(_photos(1)[0], "rb").read()
    app = make_app(onnx_path, similar=cache, max_bytes=200_000)
    boundary = "cnncodes-test-boundary"  # a browser's form upload
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()

    async def script(client):
        out = {"corrupt": await _post(client, "/similar", b"\xff\xd8 not really a jpeg"),
               "big": await _post(client, "/similar", b"x" * 300_000),
               "type": await _post(client, "/similar", b"hello", "text/plain"),
               "empty": await _post(client, "/similar", b""),
               "form": await _post(client, "/similar?k=3", form, f"multipart/form-data; boundary={boundary}"),
               "text": await _post(client, "/similar?text=a+red+rose", body)}
        for k in ("0", "-2", "abc", "1.5", "1001"):
            out[f"k={k}"] = await _post(client, f"/similar?k={k}", body)
        out["still"] = await _post(client, "/similar?k=3", body)
        out["predict"] = await _post(client, "/predict", body)
        return out

    out = _talk(app, script)
    for name, (status, answer) in out.items():
        if name in ("form", "still", "predict"):
            assert status == 200, (name, answer)
        else:
            assert 400 <= status < 500 and "\n" not in answer["error"] and set(answer) == {"error"}, (name, answer)
    assert out["corrupt"][0] == 400 and "not a usable image" in out["corrupt"][1]["error"]
    assert out["big"][0] == 413 and "more than 200,000" in out["big"][1]["error"]
    assert out["type"][0] == 415 and "image/*" in out["type"][1]["error"]
    assert out["empty"][0] == 400
    assert out["text"][0] == 400 and "text tower" in out["text"][1]["error"]
    assert all(out[f"k={k}"][0] == 400 and "k must be" in out[f"k={k}"][1]["error"]
               for k in ("0", "-2", "abc", "1.5", "1001"))
    assert out["form"][1]["neighbours"] == out["still"][1]["neighbours"] and len(out["still"][1]["neighbours"]) == 3


def test_without_a_cache_similar_is_404_and_predict_serves(served):
    from cnncodes.classify.deploy.serve import make_app
    _, _, onnx_path = served
    body = open(_photos(1)[0], "rb").read()

    async def script(client):
        return (await _post(client, "/similar", body), await _post(client, "/predict", body),
                await (await client.get("/health")).json())

    (status, answer), (predict_status, _), health = _talk(make_app(onnx_path), script)
    assert status == 404 and "--similar CACHE" in answer["error"] and "\n" not in answer["error"]
    assert predict_status == 200 and "similar" not in health


def _one_line_refusal(onnx_path, cache, *expected):
    from cnncodes.classify.deploy.serve import make_app
    from cnncodes.classify.errors import ClassifyError
    with pytest.raises(ClassifyError) as refused:
        make_app(onnx_path, similar=cache)
    message = str(refused.value)
    assert "\n" not in message and all(part in message for part in expected), message
    out = run_cli("serve", onnx_path, "--similar", cache, check=False)  # the command line says the same
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr
    assert all(part in out.stderr for part in expected), out.stderr
    return message


def test_a_cache_of_another_extractor_or_layer_is_refused_at_start(served, tmp_path):
    _, _, onnx_path = served
    few = tmp_path / "few"
    shutil.copytree(os.path.join(DEMO, "val", "roses"), few / "roses")
    other = str(tmp_path / "other.h5")  # other weights, another crop
    run_cli("extract", few, "--cache", other, "--backbone", "efficientnet_lite0", "--weights", "random:3",
            "--crop-size", "64", "--precision", "fp32", "--no-progress", "--workers", "0", "--layer", "avgpool")
    message = _one_line_refusal(onnx_path, other, other, "another extractor", "weights", "preprocess")
    assert "backbone" not in message.split("(", 1)[1].split("); ")[0]  # the same backbone is no difference
    layer = str(tmp_path / "stage6.h5")  # the model's extractor, another layer
    run_cli("extract", few, "--cache", layer, *LITE, "--layer", "stage6")
    _one_line_refusal(onnx_path, layer, layer, "no layer avgpool", "--layer avgpool")


def test_a_graph_exported_before_the_codes_output_is_refused_with_the_fix(served, tmp_path):
    import onnx
    _, cache, onnx_path = served
    graph = onnx.load(onnx_path)
    kept = [o for o in graph.graph.output if o.name != "codes"]
    del graph.graph.output[:]
    graph.graph.output.extend(kept)
    kept_meta = [(p.key, p.value) for p in graph.metadata_props if p.key not in ("codes", "fingerprint")]
    del graph.metadata_props[:]
    for key, value in kept_meta:
        graph.metadata_props.add(key=key, value=value)
    old = str(tmp_path / "old.onnx")
    onnx.save(graph, old)
    _one_line_refusal(old, cache, old, "exported before", "export it again", "cnncodes export-model")
    from cnncodes.classify.deploy.onnx_predict import predict_images_onnx  # the old graph still predicts
    predictions, failures = predict_images_onnx(old, _photos(2))
    assert len(predictions) == 2 and not failures


def test_the_service_with_similar_imports_no_torch(served, tmp_path):
    """Exact, and through a faiss index in step with the cache: ONNX Runtime, numpy and faiss only."""
    _, cache, onnx_path = served
    caches = [cache]
    if importlib.util.find_spec("faiss") is not None:
        indexed = str(tmp_path / "indexed.h5")
        run_cli("pack", cache, "--out", indexed)
        run_cli("index", indexed)
        caches.append(indexed)
    code = ("import asyncio, sys\n"
            "from aiohttp.test_utils import TestClient, TestServer\n"
            "from cnncodes.classify.deploy.serve import make_app\n"
            "async def main(cache, kind):\n"
            "    async with TestClient(TestServer(make_app(sys.argv[1], similar=cache))) as client:\n"
            "        r = await client.post('/similar?k=2', data=open(sys.argv[2], 'rb').read(),\n"
            "                              headers={'Content-Type': 'image/jpeg'})\n"
            "        assert r.status == 200 and (await r.json())['search'] == kind, await r.text()\n"
            "for cache, kind in zip(sys.argv[3:], ['exact', 'flat']):\n"
            "    asyncio.run(main(cache, kind))\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    out = subprocess.run([sys.executable, "-c", code, onnx_path, _photos(1)[0], *caches], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
