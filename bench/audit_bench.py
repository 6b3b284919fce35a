#!/usr/bin/env python
"""The audit's cost: rows, seconds and peak memory of `pipeline.py audit` on synthetic caches
(clustered 1280-d float16 codes in the documented schema, five classes, 80/10/10 splits, a few
planted copies), each size in a fresh process.

    python bench/audit_bench.py --sizes 10000,30000,100000
"""
import argparse
import os

import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from cache import Fingerprint, open_for_append  # noqa: E402


def synthetic_cache(path, n, width=1280, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (5, width)).astype(np.float32)
    y = rng.integers(0, 5, n)
    X = centres[y] + rng.normal(0, 1.5, (n, width)).astype(np.float32)
    X[n // 2: n // 2 + 20] = X[:20] + rng.normal(0, 0.01, (20, width))  # planted near copies
    splits = rng.choice(["train", "val", "test"], n, p=[0.8, 0.1, 0.1])
    fingerprint = Fingerprint(backbone="synthetic", layers=("avgpool",), weights="random:0", preprocess={"crop": 224})
    names = [f"c{k}" for k in range(5)]
    with open_for_append(path, fingerprint, {"avgpool": width}, names, background=False) as session:
        for start in range(0, n, 8192):
            stop = min(n, start + 8192)
            session.add_rows([f"{names[y[i]]}/{i:07d}.jpg" for i in range(start, stop)],
                             [f"{i:064x}" for i in range(start, stop)], list(splits[start:stop]),
                             [names[y[i]] for i in range(start, stop)], [(1, 1, i) for i in range(start, stop)],
                             {"avgpool": X[start:stop]})
            session.commit_shard()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,30000")
    ap.add_argument("--max-memory", default=None, help="audit's --max-memory (its default is a quarter of RAM)")
    args = ap.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} CPUs")
    print(f"{'rows':>8}{'seconds':>9}{'peak GB':>9}  result")
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(s) for s in args.sizes.split(",")]:
            cache = os.path.join(tmp, f"c{n}.h5")
            synthetic_cache(cache, n)
            code = (f"import resource, sys; sys.path.insert(0, {ROOT!r}); import pipeline; "
                    f"rc = pipeline.main(['audit', {cache!r}, '--report', {os.path.join(tmp, 'r')!r}, "
                    f"'--threshold', '0.9'{', ' + repr('--max-memory') + ', ' + repr(args.max_memory) if args.max_memory else ''}]); "
                    "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20); sys.exit(rc)")
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            seconds = time.perf_counter() - started
            peak = next((float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("PEAK")), 0.0)
            near = next((line for line in out.stdout.splitlines() if line.startswith("near duplicates")), out.stderr[-200:])
            print(f"{n:>8}{seconds:>9.1f}{peak:>9.2f}  {near}", flush=True)



if __name__ == "__main__":
    main()
