#!/usr/bin/env python
"""Stage two against the classic approach, and the cache's size and read speed, in one run.

For each classifier: seconds from the cache file to a trained model (sweep and refit included).
Classic: the exercise trains its final layer for 2 epochs while every image goes through VGG16
again in every epoch. A real slice of that loop is timed here (batches of 20 through VGG16 in
fp32, backward through the new last layer, SGD step) and scaled to 2 epochs over the cache's
training rows; the output says so. On a map layer (pool5_map) the classic loop trains what the
seed's own code trains, fc6, fc7 and a new fc8 (dropout between), beside `seed-top`, the same
recipe on the cached maps.

    python bench/stage2_bench.py f5.h5 --classic-batches 3
    python bench/stage2_bench.py vgg_maps.h5 --layer pool5_map --whole-process seed-top
"""
import argparse
import os
import subprocess
import sys
import time

import cnncodes  # noqa: F401  before torch: its OpenMP setting (cnncodes/_openmp.py) applies only then
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from cnncodes.cache import open_cache  # noqa: E402
from _common import VMHWM_KB  # noqa: E402
from cnncodes.classify import compare, read_codes, plan_splits  # noqa: E402


def classic_seconds_per_image(batches, batch=20, crop=224, n_classes=5, whole_top=False):
    """whole_top: fc6, fc7 and the new fc8 train (the seed's code); else the new fc8 alone."""
    from torchvision.models import vgg16
    torch.manual_seed(0)
    net = vgg16(weights=None)
    for p in net.parameters():
        p.requires_grad = False
    net.classifier[6] = torch.nn.Linear(4096, n_classes)  # the fresh final layer
    trained = net.classifier if whole_top else net.classifier[6]
    for p in trained.parameters():
        p.requires_grad = True
    opt = torch.optim.SGD(trained.parameters(), lr=0.001, momentum=0.9)
    net.train()
    x = torch.randn(batch, 3, crop, crop)
    y = torch.randint(0, n_classes, (batch,))
    step = lambda: (opt.zero_grad(), torch.nn.functional.cross_entropy(net(x), y).backward(), opt.step())  # noqa: E731
    step()  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        step()
    return (time.perf_counter() - started) / (batches * batch)


def read_throughput(path, layer, repeats=3):
    best = float("inf")
    with open_cache(path) as c:
        for _ in range(repeats):
            started = time.perf_counter()
            X = c.codes(layer)
            best = min(best, time.perf_counter() - started)
    return len(X) / best, X.shape


def repeated_cache(path, rows, chunk=65536):
    """A cache of ``rows`` rows: the real rows of ``path`` repeated, labels and splits kept, built in
    a child process (so this one's memory stays small) beside the original."""
    big = f"{path}.{rows}.h5"
    if not os.path.exists(big):
        code = f"""
import sys, numpy as np
from cnncodes.cache import open_cache, open_for_append
with open_cache({path!r}) as src:
    X, y, splits, names, fp = src.codes(), src.labels, src.splits, src.class_names, src.fingerprint_object
    widths = {{layer: src.width(layer) for layer in src.layers}}
layer = fp.layers[0]
with open_for_append({big!r}, fp, widths, names) as s:
    for start in range(0, {rows}, {chunk}):
        idx = np.arange(start, min({rows}, start + {chunk}))
        rep = idx % len(y)
        s.add_rows([f"repeat/{{i:08d}}.jpg" for i in idx], [f"{{i:064x}}" for i in idx], splits[rep].tolist(),
                   [names[k] for k in y[rep]], [(1, int(i), int(i)) for i in idx], {{layer: X[rep]}})
        s.commit_shard()
"""
        subprocess.run([sys.executable, "-c", code], check=True)
    return big


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache")
    ap.add_argument("--layer", default=None, help="the layer to fit on (default: fit's default)")
    ap.add_argument("--classifiers", default=None, help="default: every classifier that fits the layer")
    ap.add_argument("--classic-batches", type=int, default=3, help="batches of 20 timed for the classic loop")
    ap.add_argument("--million", type=int, default=0, metavar="ROWS",
                    help="also build a ROWS-row cache by repeating the cache's real rows (labels and splits kept) "
                         "and time `fit --classifier logreg --max-memory BUDGET` on it, with its peak memory")
    ap.add_argument("--budget", default="1G", help="--max-memory for the --million case")
    ap.add_argument("--whole-process", default="logreg",
                    help="classifiers also timed as a whole `pipeline.py fit` process (imports included)")
    args = ap.parse_args()

    data = read_codes(args.cache, args.layer)
    maps = bool(data.fingerprint.maps_in(data.layer))
    with open_cache(args.cache) as c:
        size = c.size_bytes()
    rows_per_s, shape = read_throughput(args.cache, data.layer)
    print(f"cache {args.cache}: {shape[0]} rows x {shape[1]} ({data.fingerprint.dtype}), "
          f"{size / 1e6:.1f} MB, {size / shape[0] / 1e3:.2f} kB per image; "
          f"read {rows_per_s:,.0f} rows/s into float32")

    n_fit = int(plan_splits(data.splits, data.y).fit_mask.sum())
    per_image = classic_seconds_per_image(args.classic_batches, whole_top=maps)
    classic = per_image * n_fit * 2
    print(f"classic: {per_image * 1e3:.0f} ms per image through VGG16 (fp32, batch 20, "
          f"{'fc6-fc8' if maps else 'fc8'} trained, {args.classic_batches} batches timed), scaled to 2 epochs x "
          f"{n_fit} rows = {classic:.0f} s (estimate)")
    print(f"{'classifier':<10}{'accuracy':>10}{'fit s':>9}{'speed-up vs classic':>22}")

    def line(result):
        if "skipped" in result:
            print(f"{result['classifier']:<10}skipped: {result['skipped']}", flush=True)
            return
        print(f"{result['classifier']:<10}{result['accuracy']:>10.4f}{result['fit_seconds']:>9.2f}"
              f"{classic / max(result['fit_seconds'], 1e-6):>21.0f}x", flush=True)
    compare(data, args.classifiers.split(",") if args.classifiers else None, on_result=line)
    for name in args.whole_process.split(",") if args.whole_process else []:
        started = time.perf_counter()
        subprocess.run([sys.executable, os.path.join(ROOT, "pipeline.py"), "fit", args.cache, "--classifier", name,
                        *(["--layer", args.layer] if args.layer else [])], check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        print(f"`pipeline.py fit {args.cache} --classifier {name}`, whole process: {seconds:.2f} s, "
              f"{classic / seconds:.0f}x sooner than the classic training")
    if args.million:
        big = repeated_cache(args.cache, args.million)
        child = ("import sys, time; sys.argv = ['pipeline.py'] + sys.argv[1:]; t = time.perf_counter(); "
                 "from cnncodes import cli; code = cli.main(); "
                 f"peak = {VMHWM_KB}; print(f'{{time.perf_counter() - t:.1f}} s, peak {{peak / 2**20:.2f}} GB'); "
                 "sys.exit(code)")
        out = subprocess.run([sys.executable, "-c", child, "fit", big, "--classifier", "logreg", "--max-memory",
                              args.budget], capture_output=True, text=True, cwd=ROOT, check=True)
        print(f"{args.million:,} rows, `fit --classifier logreg --max-memory {args.budget}`: "
              f"{out.stdout.strip().splitlines()[-1]}; {out.stdout.strip().splitlines()[0]}")


if __name__ == "__main__":
    main()
