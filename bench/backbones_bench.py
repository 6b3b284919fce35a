#!/usr/bin/env python
"""Backbones side by side, in one process on the same photos: per backbone, the network alone
vs `extract` end to end (images/s and their ratio), the cache's size per image, and with
--accuracy the flowers5 val accuracy of one recipe fixed in advance (the `ensemble` head, as
`compare` fits it) on codes of the whole folder, each backbone alone and, with --pairs, every
pair side by side (`fit --with`: the rows joined by path).

    python bench/backbones_bench.py ../shared/data/flowers5 --accuracy --pairs --caches /tmp/bb
    python bench/backbones_bench.py ../shared/data/flowers5 --weights random \
        --backbones resnet18,convnext_tiny,timm:convnext_atto.d2_in1k,open_clip:ViT-B-32/openai
"""
import argparse
import os
import shutil
import tempfile

import cnncodes  # noqa: F401  before torch: its OpenMP setting (cnncodes/_openmp.py) applies only then
import torch

from cnncodes.extract import ExtractConfig, Extractor, run_extract  # noqa: E402
from cnncodes.extract.config import CodeSpec  # noqa: E402
from _common import cpu, isa, model_only, subset_folder  # noqa: E402


def replicate(folder, copies):
    """Each photo of ``folder`` linked ``copies`` times under other names: more images for a short
    end-to-end run (each copy is read, hashed and decoded like any photo)."""
    for dirpath, _, files in os.walk(folder):
        for name in files:
            for k in range(1, copies):
                os.symlink(os.path.realpath(os.path.join(dirpath, name)), os.path.join(dirpath, f"copy{k}-{name}"))


def cache_bytes(path):
    total = os.path.getsize(path)
    folder = path + ".shards"
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        total += os.path.getsize(os.path.join(folder, name))
    return total


def speed(name, weights, photos_folder, tmp, seconds, workers=None):
    extractor = Extractor.for_new_codes(CodeSpec(name, weights=weights))
    model, crop = extractor.model, extractor.preprocess.crop
    precision, device, batch = extractor.precision, extractor.device, extractor.batch_size
    before = model_only(model, batch, crop, device, precision, True, seconds / 2)
    cache = os.path.join(tmp, "speed.h5")
    summary = run_extract(ExtractConfig(photos_folder, cache, backbone=name, weights=weights, progress=False,
                                        workers=workers))
    e2e = (summary.written + summary.failed) / summary.loop_seconds
    after = model_only(model, batch, crop, device, precision, True, seconds / 2)
    per_image = cache_bytes(cache) / max(1, summary.written)
    shutil.rmtree(cache + ".shards", ignore_errors=True)
    os.remove(cache)
    return {"model": (before + after) / 2, "e2e": e2e, "precision": precision, "batch": batch, "crop": crop,
            "bytes": per_image, "layers": ",".join(extractor.fingerprint.layers)}


def cache_of(name, folder):
    return os.path.join(folder, name.replace(":", "_").replace("/", "_") + ".h5")


def accuracy(names, weights, data, folder):
    """The ensemble's accuracy on the codes of ``names`` (one, or several side by side)."""
    from cnncodes.classify import fit_and_evaluate, read_codes
    from cnncodes.classify.joined import join_caches
    seconds = 0.0
    for name in names:  # a cache kept in --caches from an earlier run is only re-checked
        seconds += run_extract(ExtractConfig(data, cache_of(name, folder), backbone=name, weights=weights,
                                             progress=False)).seconds
    codes = join_caches(read_codes(cache_of(names[0], folder)), [cache_of(n, folder) for n in names[1:]])
    result, _ = fit_and_evaluate(codes, "ensemble")
    return {"val": result["accuracy"], "n_eval": result["n_eval"], "eval_split": result["eval_split"],
            "fit_seconds": result["fit_seconds"], "extract_seconds": seconds, "width": int(codes.X.shape[1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--backbones", default="efficientnet_lite0,efficientnet_lite1,efficientnet_lite2")
    ap.add_argument("--weights", default=None, help="pretrained (default) or random")
    ap.add_argument("--limit", type=int, default=1000, help="photos for the speed runs (a short run's fixed "
                    "costs, worker start-up above all, weigh on fast networks)")
    ap.add_argument("--copies", type=int, default=1, help="link each of those photos this many times (a small "
                    "folder such as cnncodes/demo_data/flowers made big enough for a GPU)")
    ap.add_argument("--seconds", type=float, default=10.0, help="network-alone timing, split around the run")
    ap.add_argument("--accuracy", action="store_true", help="extract the whole folder and fit the ensemble")
    ap.add_argument("--pairs", action="store_true", help="with --accuracy: every pair of backbones side by side")
    ap.add_argument("--caches", default=None, help="folder to keep the whole-folder caches in (reused when present)")
    ap.add_argument("--skip-speed", action="store_true", help="accuracy only")
    ap.add_argument("--workers", type=int, default=None, help="decoding workers of the end-to-end runs (default: the device's)")
    args = ap.parse_args()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"machine: {cpu()} ({isa()}), {gpu}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    tmp = tempfile.mkdtemp(prefix="cnncodes-backbones-")
    folder = args.caches or tmp
    os.makedirs(folder, exist_ok=True)
    names = args.backbones.split(",")
    try:
        subset_folder(args.data, args.limit, os.path.join(tmp, "photos"))
        if args.copies > 1:
            replicate(os.path.join(tmp, "photos"), args.copies)
        print(f"{'backbone':<34}{'layers':<16}{'input':>6}{'prec':>6}{'model/s':>9}{'e2e/s':>8}{'ratio':>7}"
              f"{'kB/img':>8}" + (f"{'val acc':>9}{'fit s':>7}{'extract s':>10}" if args.accuracy else ""))
        for name in [] if args.skip_speed else names:
            s = speed(name, args.weights, os.path.join(tmp, "photos"), tmp, args.seconds, args.workers)
            line = (f"{name:<34}{s['layers']:<16}{s['crop']:>6}{s['precision']:>6}{s['model']:>9.1f}{s['e2e']:>8.1f}"
                    f"{s['e2e'] / s['model']:>7.2f}{s['bytes'] / 1e3:>8.1f}")
            if args.accuracy:
                a = accuracy([name], args.weights, args.data, folder)
                line += f"{a['val']:>9.4f}{a['fit_seconds']:>7.1f}{a['extract_seconds']:>10.0f}"
            print(line, flush=True)
        groups = [[n] for n in names] if args.skip_speed and args.accuracy else []
        if args.pairs and args.accuracy:
            groups += [[a, b] for i, a in enumerate(names) for b in names[i + 1:]] + ([names] if len(names) > 2 else [])
        for group in groups:
            a = accuracy(group, args.weights, args.data, folder)
            print(f"{' + '.join(group):<60} {a['width']:>6}-d  val acc {a['val']:.4f}  fit {a['fit_seconds']:.1f} s",
                  flush=True)
        if args.accuracy:
            print(f"accuracy: the `ensemble` head on the {a['eval_split']} split ({a['n_eval']} photos)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
