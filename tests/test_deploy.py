"""Deployment: one ONNX file per model (image -> probabilities), predict with ONNX Runtime and no
torch, and the HTTP service, tested with a real client against the running server."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import FAST_VGG, ROOT, make_image, run_cli, start_cli

pytest.importorskip("onnxruntime", reason="deployment is the optional extra: pip install -e '.[deploy]'")
DEMO = os.path.join(ROOT, "cnncodes", "demo_data", "flowers")
LITE = ("--backbone", "efficientnet_lite0", "--precision", "fp32", "--no-progress", "--workers", "0")
MAX_ABS = 1e-4  # ONNX Runtime against torch, fp32 (stated in docs/cli.md)


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    """efficientnet_lite0 (the real weights) codes and stage-7 maps of the shipped photos."""
    root = tmp_path_factory.mktemp("deploy")
    cache = str(root / "lite.h5")
    run_cli("extract", DEMO, "--cache", cache, *LITE, "--layer", "avgpool,stage6,stage7_map")
    return root, cache


def _fit(root, cache, name, *extra):
    model = str(root / f"{name}.npz")
    if not os.path.exists(model):
        run_cli("fit", cache, "--classifier", name, "--model", model, *extra)
    return model


def _export(model):
    out = model.replace(".npz", ".onnx")
    if not os.path.exists(out):
        run_cli("export-model", model, "--out", out)
    return out


def _torch_and_onnx(model_path, onnx_path, paths):
    """Probabilities of the torch path (the model's extractor in fp32, codes rounded to the cache's
    dtype, the fitted pipeline) and of ONNX Runtime on the numpy/PIL inputs, for ``paths``."""
    from cnncodes.classify import read_model_file
    from cnncodes.classify.deploy.onnx_predict import OnnxModel
    from cnncodes.extract.by_fingerprint import encode_images
    loaded = read_model_file(model_path)
    got, codes, failures = encode_images(loaded.fingerprint, paths, device="cpu", layer=loaded.layer, precision="fp32")
    assert not failures and got == paths
    session = OnnxModel(onnx_path)
    names = [loaded.class_names[int(i)] for i in loaded.classes]
    assert session.class_names == names
    return loaded.predict_proba(codes), session.predict_proba(np.stack([session.prepare(p) for p in paths]))


def _photos(n=12):
    return sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(DEMO, "val")) for f in fs)[:n]


def test_numpy_preprocessing_gives_torchvisions_pixels(tmp_path):
    """The PIL-only resize and crop equal Preprocess.pil_transform's uint8 pixels, for shapes that
    round differently (portrait, landscape, odd sizes, smaller than the resize) and for squash."""
    from cnncodes.extract.decoding import decode_rgb
    from cnncodes.extract.preprocessing import Preprocess
    from cnncodes.classify.deploy.onnx_predict import network_input
    sizes = [(500, 375), (375, 500), (333, 257), (1001, 99), (224, 224), (257, 256)]
    paths = [make_image(str(tmp_path / f"{w}x{h}.png"), seed=w, size=(w, h)) for w, h in sizes] + _photos(4)
    recipes = [Preprocess(), Preprocess(resize=256, crop=224, interpolation="bicubic"),
               Preprocess(resize=240, crop=240, squash=True), Preprocess().with_crop(260)]
    for recipe in recipes:
        for path in paths:
            img = decode_rgb(path)
            np.testing.assert_array_equal(network_input(img, recipe.to_dict()), recipe.pil_transform()(img).numpy(),
                                          err_msg=f"{path} {recipe}")


@pytest.mark.parametrize("name,layer", [("ensemble", None), ("seed", None), ("top", "stage7_map")])
def test_onnx_probabilities_equal_the_torch_path_for_lite0(lite, name, layer):
    """The ensemble carries logreg, linear, svm, ridge and mlp; seed is a plain Gemm on raw codes;
    top is the network's own head trained on maps."""
    root, cache = lite
    model = _fit(root, cache, name, *(["--layer", layer] if layer else []))
    onnx_path = _export(model)
    expected, got = _torch_and_onnx(model, onnx_path, _photos())
    assert np.abs(expected - got).max() <= MAX_ABS
    assert (expected.argmax(1) == got.argmax(1)).all()


def test_onnx_of_vgg16_and_a_zoo_backbone_equal_the_torch_path(tmp_path):
    """VGG16 (random weights, 32-pixel input, fc7 codes) and torchvision's resnet18 (random weights)."""
    for backbone, args in (("vgg16", FAST_VGG), ("resnet18", ("--backbone", "resnet18", "--weights", "random:3",
                                                               "--crop-size", "64", "--no-progress", "--workers", "0"))):
        cache, model = str(tmp_path / f"{backbone}.h5"), str(tmp_path / f"{backbone}.npz")
        run_cli("extract", DEMO, "--cache", cache, *args, "--precision", "fp32")
        run_cli("fit", cache, "--classifier", "logreg", "--model", model)
        onnx_path = _export(model)
        size = os.path.getsize(onnx_path)
        assert not os.path.exists(onnx_path + ".data") and size > 1e6  # one file, weights inside
        expected, got = _torch_and_onnx(model, onnx_path, _photos(6))
        assert np.abs(expected - got).max() <= MAX_ABS, backbone


def test_knn_is_refused_in_one_line(lite):
    root, cache = lite
    model = _fit(root, cache, "knn")
    out = run_cli("export-model", model, "--out", str(root / "knn.onnx"), check=False)
    assert out.returncode == 2 and "knn keeps every training code" in out.stderr
    assert out.stderr.strip().count("\n") == 0 and not os.path.exists(root / "knn.onnx")


def test_predict_with_onnxruntime_imports_no_torch_and_agrees(lite):
    root, cache = lite
    onnx_path = _export(_fit(root, cache, "ensemble"))
    code = ("import json, sys; from cnncodes import cli; "
            "code = cli.main(['predict', sys.argv[2], sys.argv[3], '--json']); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", code, ROOT, onnx_path, os.path.join(DEMO, "val")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    onnx_predictions = json.loads(out.stdout)["predictions"]
    torch_predictions = json.loads(run_cli("predict", root / "ensemble.npz", os.path.join(DEMO, "val"),
                                           "--json").stdout)["predictions"]
    assert len(onnx_predictions) == len(torch_predictions) == len(_photos(1000)) == 50
    same = sum(a["label"] == b["label"] for a, b in zip(onnx_predictions, torch_predictions))
    assert same >= 48  # the torch path runs bf16 autocast where the CPU has it; the graph fp32


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url, data=None, content_type=None, timeout=30):
    """(status, JSON body) of a real HTTP request."""
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_server_batches_refuses_bad_uploads_and_keeps_serving(lite):
    root, cache = lite
    onnx_path = _export(_fit(root, cache, "ensemble"))
    port = _free_port()
    server = start_cli("serve", onnx_path, "--port", port, "--max-wait-ms", "50", "--max-bytes", "200000")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                status, health = _request(f"{base}/health", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.communicate()[1]
                time.sleep(0.2)
        assert status == 200 and health["status"] == "ok" and len(health["classes"]) == 5
        photos = _photos(16)
        bodies = [open(p, "rb").read() for p in photos]
        with ThreadPoolExecutor(16) as pool:  # 16 concurrent clients
            started = time.time()
            answers = list(pool.map(lambda b: _request(f"{base}/predict?top_k=2", b, "image/jpeg"), bodies))
            seconds = time.time() - started
        assert all(status == 200 for status, _ in answers) and seconds < 60
        assert all(len(body["top_k"]) == 2 and body["label"] in health["classes"] for _, body in answers)
        from cnncodes.classify.deploy.onnx_predict import predict_images_onnx
        local, _ = predict_images_onnx(onnx_path, photos)
        assert [body["label"] for _, body in answers] == [p["label"] for p in local]
        _, after = _request(f"{base}/health")
        assert after["requests"] == 16 and after["batches"] < 16  # requests that arrived together ran together

        status, body = _request(f"{base}/predict", b"\xff\xd8 not really a jpeg", "image/jpeg")
        assert status == 400 and "not a usable image" in body["error"] and "\n" not in body["error"]
        status, body = _request(f"{base}/predict", b"x" * 300000, "image/jpeg")
        assert status == 413 and "more than 200,000" in body["error"]
        status, body = _request(f"{base}/predict", b"hello", "text/plain")
        assert status == 415 and "image/*" in body["error"]
        boundary = "cnncodes-test-boundary"  # a browser's form upload
        form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
                "Content-Type: image/jpeg\r\n\r\n").encode() + bodies[1] + f"\r\n--{boundary}--\r\n".encode()
        status, body = _request(f"{base}/predict", form, f"multipart/form-data; boundary={boundary}")
        assert status == 200 and body["label"] == answers[1][1]["label"]
        status, body = _request(f"{base}/predict", bodies[0], "image/jpeg")  # still serving
        assert status == 200 and body["label"] == answers[0][1]["label"] and server.poll() is None
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_extract_with_onnxruntime_gives_torchs_codes_and_records_it(tmp_path, monkeypatch):
    from cnncodes.cache import open_cache
    monkeypatch.setenv("CNNCODES_ONNX_DIR", str(tmp_path / "graphs"))
    folder = os.path.join(DEMO, "val")
    run_cli("extract", folder, "--cache", tmp_path / "torch.h5", *LITE)
    run_cli("extract", folder, "--cache", tmp_path / "ort.h5", *LITE[:2], "--runtime", "onnxruntime",
            "--no-progress", "--workers", "0")
    graphs = os.listdir(tmp_path / "graphs")
    assert len(graphs) == 1 and graphs[0].endswith(".onnx")
    exported = os.path.getmtime(tmp_path / "graphs" / graphs[0])
    with open_cache(str(tmp_path / "torch.h5")) as a, open_cache(str(tmp_path / "ort.h5")) as b:
        assert b.fingerprint.precision == "onnxruntime-fp32" and a.fingerprint.precision == "fp32"
        assert a.paths == b.paths
        for layer in a.layers:
            x, y = a.codes(layer), b.codes(layer)
            cosine = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
            assert cosine.min() > 0.9999, layer
    run_cli("extract", folder, "--cache", tmp_path / "again.h5", *LITE[:2], "--runtime", "onnxruntime",
            "--no-progress", "--workers", "0")
    assert os.path.getmtime(tmp_path / "graphs" / graphs[0]) == exported  # the graph is exported once
    out = run_cli("extract", folder, "--cache", tmp_path / "x.h5", "--runtime", "onnxruntime", "--precision", "bf16",
                  check=False)
    assert out.returncode == 2 and "computes in fp32" in out.stderr and out.stderr.strip().count("\n") == 0
