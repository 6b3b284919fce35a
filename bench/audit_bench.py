#!/usr/bin/env python
"""The audit's cost: rows, seconds and peak memory of `pipeline.py audit` on synthetic caches
(clustered 1280-d float16 codes in the documented schema, five classes, 80/10/10 splits, copies
planted at four cosines), each size in a fresh process.

    python bench/audit_bench.py --sizes 10000,30000,100000
"""
import argparse
import json
import os

import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from cnncodes.cache import Fingerprint, open_for_append  # noqa: E402
from _common import VMHWM_KB, cpu  # noqa: E402


# Per-dimension noise added to a copy and the cosine it gives (a code's variance is 1 + 1.5^2 a
# dimension: cosine ~ 1 / sqrt(1 + sigma^2 / 3.25)); each level plants PER_LEVEL copies.
PLANTED = [(0.01, 1.0), (0.26, 0.99), (0.53, 0.96), (0.71, 0.93)]
PER_LEVEL = 20


def planted_found(report, n) -> list:
    """How many planted copies of each level audit.json lists as near (or exact) duplicates."""
    with open(os.path.join(report, "audit.json")) as f:
        found = json.load(f)
    number = {}
    for pair in found["near_duplicates"]:
        a, b = sorted(int(r["path"].split("/")[1][:7]) for r in pair["rows"])
        number[a] = b
    return [sum(number.get(i) == i + n // 2 for i in range(level * PER_LEVEL, (level + 1) * PER_LEVEL))
            for level in range(len(PLANTED))]


def synthetic_cache(path, n, width=1280, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (5, width)).astype(np.float32)
    y = rng.integers(0, 5, n)
    X = centres[y] + rng.normal(0, 1.5, (n, width)).astype(np.float32)
    for level, (sigma, _) in enumerate(PLANTED):  # planted near copies: row i + n // 2 copies row i
        rows = np.arange(level * PER_LEVEL, (level + 1) * PER_LEVEL)
        X[n // 2 + rows] = X[rows] + rng.normal(0, sigma, (PER_LEVEL, width))
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
    print(f"machine: {cpu()}")
    levels = ", ".join(f"cos~{cos}" for _, cos in PLANTED)
    print(f"{'rows':>8}{'seconds':>9}{'peak GB':>9}  planted copies found of {PER_LEVEL} each ({levels}); search")
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(s) for s in args.sizes.split(",")]:
            cache = os.path.join(tmp, f"c{n}.h5")
            synthetic_cache(cache, n)
            code = (f"import sys; from cnncodes import cli; "
                    f"rc = cli.main(['audit', {cache!r}, '--report', {os.path.join(tmp, 'r')!r}, "
                    f"'--threshold', '0.9'{', ' + repr('--max-memory') + ', ' + repr(args.max_memory) if args.max_memory else ''}]); "
                    f"print('PEAK', {VMHWM_KB} / 2**20); sys.exit(rc)")
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            seconds = time.perf_counter() - started
            peak = next((float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("PEAK")), 0.0)
            if out.returncode:
                print(f"{n:>8}  failed: {out.stderr[-300:]}", flush=True)
                continue
            search = next((line for line in out.stdout.splitlines() if line.startswith("near duplicates")), "")
            print(f"{n:>8}{seconds:>9.1f}{peak:>9.2f}  {planted_found(os.path.join(tmp, 'r'), n)}; {search}", flush=True)



if __name__ == "__main__":
    main()
