#!/usr/bin/env python
"""Extraction throughput, three ways, in one process on the same images:

  model-only  the extractor on random tensors (same batch size, precision, memory layout)
  cnncodes    `pipeline.py extract` end to end (decode workers, device, cache writes)
  classic     the classic exercise's loop: fp32, batch 20, no workers, RandomResizedCrop +
              ToTensor per image, model in default memory layout

Prints images/s and the ratios cnncodes/model-only and cnncodes/classic. With --precision int8
the model-only figure times the int8 network (calibrated on random tensors: kernel speed does not
depend on the ranges); the extract run's one-off calibration on real images is reported on its
own line (it runs once per cache, not per image).

    python bench/extract_bench.py ../shared/data/flowers5 --backbone vgg16 --weights random --limit 192
    python bench/extract_bench.py ../shared/data/flowers5 --backbone vgg16 --weights random --precision int8
"""
import argparse
import os
import shutil
import tempfile
import time

import cnncodes  # noqa: F401  before torch: its OpenMP setting (cnncodes/_openmp.py) applies only then
import torch

from cnncodes.extract import ExtractConfig, get_backbone, int8, options, run_extract  # noqa: E402
from cnncodes.extract.device import batching, pick_device, pick_precision  # noqa: E402
from cnncodes.extract.weights import resolve_weights  # noqa: E402

from _common import model_only, subset_folder  # noqa: E402


def timing_model(model, precision, crop, compile_model, engine):
    """The network as the extract run executes it. For int8, the speed of the kernels does not
    depend on the calibrated ranges, so random inputs calibrate this timing copy."""
    if precision == "int8":
        ranges = int8.calibrate(model, crop, lambda prepared: prepared(torch.rand(2, 3, crop, crop)), ["timing"],
                                engine)
        model = int8.quantize(model, crop, ranges)
    if compile_model:
        model = torch.compile(model.to(memory_format=torch.channels_last))
    return model


def classic_loop(model, picked, crop, limit_seconds=60.0):
    """The classic exercise: one image at a time through RandomResizedCrop + ToTensor, batch 20."""
    from PIL import Image
    from torchvision import transforms
    tf = transforms.Compose([transforms.RandomResizedCrop(crop), transforms.ToTensor()])
    model = model.to(memory_format=torch.contiguous_format)
    device = next(model.parameters()).device
    n, started = 0, time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(picked), 20):
            batch = torch.stack([tf(Image.open(r.abspath).convert("RGB")) for r in picked[i:i + 20]])
            model(batch.to(device))
            n += len(batch)
            if time.perf_counter() - started > limit_seconds:
                break
    return n / (time.perf_counter() - started)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--backbone", default="vgg16")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--limit", type=int, default=256, help="images to extract")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="model-only timing, split before and after the extract run")
    ap.add_argument("--decoder", default="pil", choices=options.DECODERS)
    ap.add_argument("--jpeg-draft", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the network (both paths)")
    ap.add_argument("--calibration-images", type=int, default=options.DEFAULT_CALIBRATION_IMAGES)
    ap.add_argument("--int8-engine", default=options.DEFAULT_INT8_ENGINE, choices=options.INT8_ENGINES)
    ap.add_argument("--skip-classic", action="store_true")
    args = ap.parse_args()

    spec = get_backbone(args.backbone)
    device = pick_device(args.device)
    precision = pick_precision(args.precision, device)
    batch, workers = batching(device, args.batch_size, args.workers)
    weights = resolve_weights(spec, args.weights)
    model = spec.build(weights, (spec.first_default_layer,))
    crop = spec.preprocess.crop
    tmp = tempfile.mkdtemp(prefix="cnncodes-bench-")
    try:
        picked = subset_folder(args.data, args.limit, os.path.join(tmp, "data"))
        # The other paths are timed half before and half after the extract run: this machine's
        # speed drifts from minute to minute.
        classic_before = None if args.skip_classic else classic_loop(model, picked, crop, 30.0)
        timed_model = timing_model(model, precision, crop, args.compile, args.int8_engine)
        mo_before = model_only(timed_model, batch, crop, device, precision, True, args.seconds / 2)
        cache_path = os.path.join(tmp, "c.h5")
        summary = run_extract(ExtractConfig(os.path.join(tmp, "data"), cache_path, backbone=args.backbone,
                                            weights=args.weights, device=args.device, precision=precision,
                                            calibration_images=args.calibration_images,
                                            int8_engine=args.int8_engine,
                                            decoder=args.decoder, jpeg_draft=args.jpeg_draft, compile=args.compile,
                                            batch_size=batch, workers=workers, progress=False))
        # The loop's own throughput: the run's total also holds model build and weight hashing.
        e2e = (summary.written + summary.failed) / summary.loop_seconds
        mo_after = model_only(timed_model, batch, crop, device, precision, True, args.seconds / 2)
        mo = (mo_before + mo_after) / 2
        classic_after = None if args.skip_classic else classic_loop(model, picked, crop, 30.0)
        classic = None if args.skip_classic else (classic_before + classic_after) / 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, device {device}, "
          f"threads {torch.get_num_threads()}")
    engine = f" ({args.int8_engine})" if precision == "int8" else ""
    draft = " (jpeg draft)" if args.jpeg_draft else ""
    print(f"backbone {args.backbone} ({spec.first_default_layer}), weights {weights.identity.split(' ')[0]}, "
          f"precision {precision}{engine}, batch {batch}, workers {workers}, decoder {args.decoder}{draft}, "
          f"images {len(picked)}")
    calibration = ", int8 calibration" if precision == "int8" else ""
    print(f"setup before the loop (scan, hashing, model build{calibration}): "
          f"{summary.seconds - summary.loop_seconds:.1f} s")
    print(f"{'path':<12}{'images/s':>10}")
    print(f"{'model-only':<12}{mo:>10.2f}   (before {mo_before:.2f}, after {mo_after:.2f} the extract run)")
    print(f"{'cnncodes':<12}{e2e:>10.2f}")
    if classic:
        print(f"{'classic':<12}{classic:>10.2f}   (before {classic_before:.2f}, after {classic_after:.2f})")
    print(f"ratio cnncodes / model-only: {e2e / mo:.3f}")
    if classic:
        print(f"ratio cnncodes / classic:    {e2e / classic:.2f}x")


if __name__ == "__main__":
    main()
