#!/usr/bin/env python
"""Issue 50's device figures in one process (bench/gpu/device_check.sh runs it under a time limit).

For each backbone (VGG16 fc7 and efficientnet_lite0, random weights, fp16 on CUDA) and each
photo size (generated JPEGs, 500x375 and 2048x1536), images/s of:
- the network alone (batch 256, channels-last), with extract's settled cuDNN (heuristic,
  deterministic) and with cudnn.benchmark, to show what reproducibility costs;
- decoding alone: the CPU workers (PIL; torchvision), every core but one, no network; the gpu
  decoder (the main process hands batches of JPEG bytes to the device: decode, orient, resize, crop);
- extract's loop with each decoder (pil, torchvision, gpu), and its share of
  min(network alone, best decoder alone);
- the seed's classic loop (one image at a time through RandomResizedCrop + ToTensor, fp32,
  batch 20, no workers) on the same device, and extract / classic;
then whether two extract processes give bit-identical codes (VGG16, the first size).

    python bench/gpu/device_check.py --n 3000
    python bench/gpu/device_check.py --dry-run        # on a CPU: every step, tiny, fp32
"""
import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [ROOT, os.path.dirname(HERE)]  # the checkout's cnncodes, and bench/_common.py

import cnncodes  # noqa: E402,F401  before torch: its OpenMP setting applies only then
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402


def _one_photo(args):
    root, i, width, height = args
    from PIL import Image
    rng = np.random.default_rng(i)
    # Smooth content (as photos are: JPEG's cost depends on it), different per image.
    small = rng.integers(0, 255, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    folder = os.path.join(root, f"class{i % 5}")
    os.makedirs(folder, exist_ok=True)
    image.save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)


def make_photos(root, n, size):
    with multiprocessing.get_context("fork").Pool(max(1, len(os.sched_getaffinity(0)))) as pool:
        pool.map(_one_photo, [(root, i, *size) for i in range(n)], chunksize=16)
    return root


def network_alone(extractor, batch, seconds, benchmark):
    from _common import model_only
    from cnncodes.extract.encoder import settle_cudnn
    settle_cudnn()
    torch.backends.cudnn.benchmark = benchmark
    try:
        return model_only(extractor.model, batch, extractor.preprocess.crop, extractor.device,
                          extractor.compute_precision, True, seconds)
    finally:
        settle_cudnn()


def cpu_decoding_alone(preprocess, records, workers, batch):
    from cnncodes.extract.dataset import ImageRecords, collate
    from cnncodes.extract.decoding import DEFAULT_MAX_PIXELS
    loader = DataLoader(ImageRecords(records, preprocess.loader(DEFAULT_MAX_PIXELS)), batch_size=batch,
                        num_workers=workers, collate_fn=collate, prefetch_factor=4)
    started = time.perf_counter()
    n = sum(len(b.indices) + len(b.failed) for b in loader)
    return n / (time.perf_counter() - started)


def gpu_decoding_alone(preprocess, records, device, batch):
    """The gpu decoder's own rate: bytes already in memory (the workers read them), decoded,
    oriented, resized and cropped on the device, a batch at a time, as the encoder calls it."""
    from cnncodes.extract.tensor_decoding import RawJpeg, finish_batch
    raws = [RawJpeg(r.abspath, open(r.abspath, "rb").read(), 1) for r in records]
    transform = preprocess.tensor_transform()
    finish_batch(list(enumerate(raws[:batch])), transform, device, 10**8)  # warm-up
    started = time.perf_counter()
    for start in range(0, len(raws), batch):
        done, _ = finish_batch(list(enumerate(raws[start:start + batch])), transform, device, 10**8)
        torch.stack(list(done.values()))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(raws) / (time.perf_counter() - started)


def extract_loop(folder, tmp, backbone, decoder, args, dry_gpu=False):
    """Images/s of extract's loop (decode, compute, commit) on a fresh cache."""
    from cnncodes.extract import ExtractConfig, run_extract
    cache = os.path.join(tmp, f"x-{decoder}.h5")
    if dry_gpu:
        return _dry_gpu_loop(folder, backbone, args)
    summary = run_extract(ExtractConfig(folder, cache, backbone=backbone, weights="random", decoder=decoder,
                                        device=args.device, precision=args.precision, batch_size=args.batch,
                                        progress=False))
    shutil.rmtree(cache + ".shards", ignore_errors=True)
    os.remove(cache)
    return (summary.written + summary.failed) / summary.loop_seconds


def _dry_gpu_loop(folder, backbone, args):
    """On a CPU (dry run) the gpu decoder cannot make a cache (its fingerprint would lie): the
    encoder's same path, decoding on the CPU, timed without the cache."""
    from dataclasses import replace
    from cnncodes.extract import Extractor
    from cnncodes.extract.config import CodeSpec, RunOptions
    from cnncodes.extract.encoder import EncodePlan, encode_batches
    from cnncodes.extract.sources import scan_source
    extractor = Extractor.for_new_codes(CodeSpec(backbone, weights="random", precision=args.precision),
                                        options=RunOptions(device="cpu", batch_size=args.batch))
    records = scan_source(folder).records
    started = time.perf_counter()
    n = sum(len(b) for b in encode_batches(extractor.model, replace(extractor.preprocess, decoder="gpu"), records,
                                           extractor.options, EncodePlan(extractor.device, extractor.compute_precision)))
    return n / (time.perf_counter() - started)


def classic(extractor, folder, seconds):
    from extract_bench import classic_loop
    from cnncodes.extract.sources import scan_source
    model = extractor.spec.build(extractor.weights, extractor.fingerprint.layers).to(extractor.device)
    return classic_loop(model, scan_source(folder).records, extractor.preprocess.crop, seconds)


def identical_codes(folder, tmp, args, n):
    """Two extract processes on the same photos: are the codes bit-identical?"""
    caches = []
    for run in range(2):
        cache = os.path.join(tmp, f"same{run}.h5")
        subprocess.run([sys.executable, os.path.join(ROOT, "pipeline.py"), "extract", folder, "--cache", cache,
                        "--backbone", "vgg16", "--weights", "random:0", "--device", args.device, "--precision",
                        args.precision, "--batch-size", str(args.batch), "--no-progress"], check=True,
                       stdout=subprocess.DEVNULL)
        caches.append(cache)
    from cnncodes import open_cache
    codes = []
    for cache in caches:
        with open_cache(cache) as c:
            order = np.argsort(np.asarray(c.paths))
            codes.append(np.asarray(c.codes())[order])
    same = codes[0].shape == codes[1].shape and np.array_equal(codes[0].view(np.uint16), codes[1].view(np.uint16))
    differ = int((codes[0] != codes[1]).any(axis=1).sum()) if codes[0].shape == codes[1].shape else -1
    return same, differ, len(codes[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="photos per size")
    ap.add_argument("--sizes", default="500x375,2048x1536")
    ap.add_argument("--backbones", default="vgg16,efficientnet_lite0")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=4.0, help="network-alone timing per setting")
    ap.add_argument("--classic-seconds", type=float, default=15.0)
    ap.add_argument("--identical", type=int, default=512, help="photos for the two-process identity check (0: skip)")
    ap.add_argument("--dry-run", action="store_true", help="on the CPU: every step, tiny (n 12, 64x48 and 256x192, "
                    "batch 4, fp32)")
    ap.add_argument("--json", default=None, help="also write every figure here")
    args = ap.parse_args()
    args.device, args.precision = "cuda", "fp16"
    if args.dry_run:
        args.device, args.precision, args.n, args.batch = "cpu", "fp32", 12, 4
        args.sizes, args.seconds, args.classic_seconds, args.identical = "64x48,256x192", 0.5, 1.0, min(args.identical, 8)
    from _common import cpu
    from cnncodes.extract import Extractor
    from cnncodes.extract.config import CodeSpec, RunOptions
    from cnncodes.extract.device import default_workers
    from cnncodes.extract.sources import scan_source
    device = torch.device(args.device)
    workers = default_workers(device)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"machine: {gpu}; {cpu()}; torch {torch.__version__}; device {device}, {args.precision}, batch {args.batch}, "
          f"{workers} decoding workers", flush=True)
    figures = {}
    tmp = tempfile.mkdtemp(prefix="cnncodes-device-")
    try:
        for size in args.sizes.split(","):
            width, height = map(int, size.split("x"))
            folder = make_photos(os.path.join(tmp, size), args.n, (width, height))
            records = scan_source(folder).records
            for backbone in args.backbones.split(","):
                row = figures.setdefault(f"{backbone} {size}", {})
                extractor = Extractor.for_new_codes(CodeSpec(backbone, weights="random", precision=args.precision),
                                                    options=RunOptions(device=args.device, batch_size=args.batch))
                label = f"{backbone} {size} ({args.n} photos)"
                row["network"] = network_alone(extractor, args.batch, args.seconds, benchmark=False)
                row["network_cudnn_benchmark"] = network_alone(extractor, args.batch, args.seconds, benchmark=True)
                print(f"{label}: network alone {row['network']:,.0f} images/s (cudnn.benchmark: "
                      f"{row['network_cudnn_benchmark']:,.0f})", flush=True)
                if backbone == args.backbones.split(",")[0]:  # decoding does not depend on the network's
                    from dataclasses import replace
                    for decoder in ("pil", "torchvision"):
                        row[f"decode_{decoder}"] = cpu_decoding_alone(replace(extractor.preprocess, decoder=decoder),
                                                                      records, workers, 32)
                    row["decode_gpu"] = gpu_decoding_alone(extractor.preprocess, records, device, args.batch)
                    decoding = {k: v for k, v in row.items() if k.startswith("decode_")}
                    figures[f"decoding {size}"] = decoding
                    print(f"{size}: decoding alone, images/s: CPU workers PIL {decoding['decode_pil']:,.0f}, "
                          f"torchvision {decoding['decode_torchvision']:,.0f}; gpu decoder {decoding['decode_gpu']:,.0f}",
                          flush=True)
                decoding = figures[f"decoding {size}"]
                best_decoder = max(decoding.values())
                ceiling = min(row["network"], best_decoder)
                for decoder in ("pil", "torchvision", "gpu"):
                    rate = extract_loop(folder, tmp, backbone, decoder, args, dry_gpu=decoder == "gpu" and args.dry_run)
                    row[f"extract_{decoder}"] = rate
                    print(f"{label}: extract, decoder {decoder}: {rate:,.0f} images/s = {rate / ceiling:.2f} of "
                          f"min(network, best decoder) = {ceiling:,.0f}", flush=True)
                row["classic"] = classic(extractor, folder, args.classic_seconds)
                best = max(row[f"extract_{d}"] for d in ("pil", "torchvision", "gpu"))
                print(f"{label}: classic loop {row['classic']:,.1f} images/s; best extract / classic "
                      f"{best / row['classic']:.1f}x", flush=True)
                del extractor
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        if args.identical:
            size = args.sizes.split(",")[0]
            folder = os.path.join(tmp, f"same-{size}")
            make_photos(folder, args.identical, tuple(map(int, size.split("x"))))
            same, differ, rows = identical_codes(folder, tmp, args, args.identical)
            figures["identical"] = {"same": same, "rows_differing": differ, "rows": rows}
            print(f"two extract processes, vgg16 {size}, {rows} photos: codes bit-identical: {same} "
                  f"({differ} rows differ)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
