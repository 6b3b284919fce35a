#!/usr/bin/env python
"""Extract against this machine's roofline, per backbone, in one run on the same photos.

Decoding (read, hash, PIL decode, resize, crop: what a worker does) and the network share the
cores, so no pipeline beats R = 1 / (1/D + 1/M), where
- D: images/s of decoding alone, one DataLoader worker per core, no network;
- M: images/s of the network alone on every core, batch as extract runs it, the faster of NCHW
  and channels-last, at the precision extract picks here;
- extract: images/s of `extract` end to end on a fresh cache (its loop: decode, compute, commit).
The last column, extract / R, is the share of what the machine allows that extract reaches. D and
M are measured just before and just after each extract run and averaged, as this machine's speed
drifts over minutes.

    python bench/roofline_bench.py ../shared/data/flowers5 --limit 1500
"""
import argparse
import os
import shutil
import tempfile
import time

import cnncodes  # noqa: F401  before torch: its OpenMP setting (cnncodes/_openmp.py) applies only then
import torch
from torch.utils.data import DataLoader

from cnncodes.extract import ExtractConfig, Extractor, run_extract  # noqa: E402
from cnncodes.extract.allocator import freed_memory_kept  # noqa: E402
from cnncodes.extract.config import CodeSpec  # noqa: E402
from cnncodes.extract.dataset import ImageRecords, collate  # noqa: E402
from cnncodes.extract.decoding import DEFAULT_MAX_PIXELS  # noqa: E402
from cnncodes.extract.sources import scan_source  # noqa: E402
from _common import cpu, isa, model_only, subset_folder  # noqa: E402

FAMILIES = "mobilenet_v3_small,efficientnet_b0,resnet18,convnext_tiny,efficientnet_lite0"


def decoding_alone(extractor, folder, cores, batch) -> float:
    """Images/s of the workers' whole job (read, hash, decode, transform, collate) on every core,
    with the allocator policy extract's workers inherit."""
    records = scan_source(folder).records
    dataset = ImageRecords(records, extractor.preprocess.loader(DEFAULT_MAX_PIXELS))
    loader = DataLoader(dataset, batch_size=batch, num_workers=cores, collate_fn=collate, prefetch_factor=4)
    with freed_memory_kept():
        started = time.perf_counter()
        n = sum(len(b.indices) for b in loader)
        return n / (time.perf_counter() - started)


def network_alone(extractor, seconds, fmt=None):
    """Images/s of the network alone in memory format ``fmt``; without one, (images/s, format)
    of the faster of NCHW and channels-last."""
    model, crop, batch = extractor.model, extractor.preprocess.crop, extractor.batch_size
    formats = (fmt,) if fmt else ("nchw", "channels_last")
    rates = {f: model_only(model, batch, crop, extractor.device, extractor.compute_precision, f == "channels_last",
                           seconds) for f in formats}
    if fmt:
        return rates[fmt]
    best = max(rates, key=rates.get)
    return rates[best], best


def end_to_end(name, weights, folder, tmp) -> float:
    cache = os.path.join(tmp, "roofline.h5")
    summary = run_extract(ExtractConfig(folder, cache, backbone=name, weights=weights, progress=False))
    shutil.rmtree(cache + ".shards", ignore_errors=True)
    os.remove(cache)
    return (summary.written + summary.failed) / summary.loop_seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--backbones", default=FAMILIES)
    ap.add_argument("--weights", default="random", help="random (the default: speed does not depend on them) "
                    "or pretrained")
    ap.add_argument("--limit", type=int, default=1500)
    ap.add_argument("--runs", type=int, default=1, help="end-to-end runs per backbone (each printed)")
    ap.add_argument("--seconds", type=float, default=8.0, help="network-alone timing around each run (half before, "
                    "half after; a quarter per memory format to choose the faster)")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    print(f"machine: {cpu()} ({isa()}{f', oneDNN capped at {cap}' if cap else ''}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, GOMP_SPINCOUNT {os.environ.get('GOMP_SPINCOUNT', 'unset')}")
    tmp = tempfile.mkdtemp(prefix="cnncodes-roofline-")
    try:
        folder = os.path.join(tmp, "photos")
        print(f"{len(subset_folder(args.data, args.limit, folder))} photos of {args.data}")
        print(f"{'backbone':<22}{'prec':>5}{'D img/s':>9}{'M img/s':>9}{'(format)':>15}{'R':>8}{'extract':>9}"
              f"{'extract/R':>10}")
        for name in args.backbones.split(","):
            extractor = Extractor.for_new_codes(CodeSpec(name, weights=args.weights))
            _, fmt = network_alone(extractor, args.seconds / 4)
            for _ in range(args.runs):
                # D and M just before and just after each run, averaged: this machine's speed drifts
                # by a quarter over minutes (shared cores), which would otherwise set the ratio.
                d_before = decoding_alone(extractor, folder, cores, extractor.batch_size)
                m_before = network_alone(extractor, args.seconds / 2, fmt)
                e = end_to_end(name, args.weights, folder, tmp)
                m = (m_before + network_alone(extractor, args.seconds / 2, fmt)) / 2
                d = (d_before + decoding_alone(extractor, folder, cores, extractor.batch_size)) / 2
                r = 1 / (1 / d + 1 / m)
                print(f"{name:<22}{extractor.compute_precision:>5}{d:>9.0f}{m:>9.1f}{fmt:>15}{r:>8.1f}{e:>9.1f}"
                      f"{e / r:>10.2f}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
