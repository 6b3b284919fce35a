#!/usr/bin/env python
"""Deployment figures for fitted models, in one run on this machine.

For each model file: export it (seconds, ONNX size); images/s of the whole graph (uint8 image ->
probabilities) at batch 1 and 32 through torch eager (channels-last as extract runs it; fp32, and
bf16 autocast where the CPU has it) and ONNX Runtime (fp32); `predict` of one photo as a whole process with torch (.npz) and
without (.onnx); then `serve` on localhost: requests/s and p50/p99 latency with concurrent clients.

    python bench/deploy_bench.py lite.npz vgg.npz resnet.npz --photo cnncodes/demo_data/flowers/val/daisy/X.jpg
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import cnncodes  # noqa: F401  before torch: its OpenMP setting (cnncodes/_openmp.py) applies only then
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from cnncodes.classify.model_file import read_model_file  # noqa: E402
from cnncodes.classify.deploy.onnx_export import deployed_model, export_onnx  # noqa: E402
from cnncodes.classify.deploy.onnx_predict import OnnxModel  # noqa: E402
from cnncodes.extract.device import pick_precision  # noqa: E402
from _common import timed  # noqa: E402  (a whole cnncodes process, median of runs)


def images_per_second(run, batch, seconds=3.0):
    run(batch)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run(batch)
        done += len(batch)
    return done / (time.perf_counter() - started)


def serve_figures(onnx_path, photo, clients, requests_each):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "pipeline.py"), "serve", onnx_path, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        body = open(photo, "rb").read()

        def one(_):
            started = time.perf_counter()
            request = urllib.request.Request(f"{base}/predict", data=body, headers={"Content-Type": "image/jpeg"})
            urllib.request.urlopen(request, timeout=60).read()
            return time.perf_counter() - started
        one(0)
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = sorted(pool.map(one, range(clients * requests_each)))
        seconds = time.perf_counter() - started
        health = json.loads(urllib.request.urlopen(f"{base}/health").read())
    finally:
        server.terminate()
        server.wait()
    n = len(latencies)
    return {"requests_per_s": n / seconds, "p50_ms": latencies[n // 2] * 1e3,
            "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1e3, "mean_batch": health["requests"] / health["batches"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--photo", required=True, help="the photo predict and the server classify")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=25, help="requests per client")
    args = ap.parse_args()
    bf16 = pick_precision("auto", torch.device("cpu")) == "bf16"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; bf16 autocast: {bf16}")
    for path in args.models:
        onnx_path = path.rsplit(".", 1)[0] + ".onnx"
        started = time.perf_counter()
        export_onnx(path, onnx_path)
        export_s = time.perf_counter() - started
        model = read_model_file(path)
        deployed, preprocess = deployed_model(model)
        session = OnnxModel(onnx_path)
        print(f"\n{path}: {model.fingerprint.backbone} {model.layer}, {model.meta['classifier']}; "
              f"npz {os.path.getsize(path) / 1e6:.1f} MB, onnx {os.path.getsize(onnx_path) / 1e6:.1f} MB "
              f"(exported in {export_s:.1f} s)")

        deployed = deployed.to(memory_format=torch.channels_last)  # as extract runs it

        def eager(batch):
            with torch.no_grad():
                deployed(torch.as_tensor(batch).contiguous(memory_format=torch.channels_last))

        def eager_bf16(batch):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                deployed(torch.as_tensor(batch).contiguous(memory_format=torch.channels_last))
        for size in (1, 32):
            batch = np.random.default_rng(0).integers(0, 256, (size, 3, preprocess.crop, preprocess.crop), dtype=np.uint8)
            row = {"torch fp32": images_per_second(eager, batch), "onnxruntime": images_per_second(session.predict_proba,
                                                                                                 batch)}
            if bf16:
                row["torch bf16"] = images_per_second(eager_bf16, batch)
            print(f"  batch {size:>2}: " + ", ".join(f"{k} {v:.1f} img/s" for k, v in row.items()) +
                  f"; onnxruntime / torch fp32 {row['onnxruntime'] / row['torch fp32']:.2f}x", flush=True)
        with_torch = timed(["predict", path, args.photo], 3)
        without = timed(["predict", onnx_path, args.photo], 3)
        print(f"  predict one photo, whole process (median of 3): torch {with_torch:.2f} s, onnxruntime "
              f"{without:.2f} s ({with_torch / without:.1f}x)")
        s = serve_figures(onnx_path, args.photo, args.clients, args.requests)
        print(f"  serve, {args.clients} clients x {args.requests} requests: {s['requests_per_s']:.1f} requests/s, "
              f"p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms, {s['mean_batch']:.1f} images per batch", flush=True)


if __name__ == "__main__":
    main()
