#!/usr/bin/env python
"""The audit's cost: rows, seconds and peak memory of `pipeline.py audit` on synthetic caches
(clustered 1280-d float16 codes in the documented schema, five classes, 80/10/10 splits, copies
planted at four cosines), each size in a fresh process.

    python bench/audit_bench.py --sizes 10000,30000,100000
    python bench/audit_bench.py --sizes 200000 --index auto --compare   # through the faiss index, and without
    python bench/audit_bench.py --sizes 1000000 --index auto --queries 2048   # the index's rate, extrapolated
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
from _common import VMHWM_KB, cpu, isa  # noqa: E402


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


def _child(code) -> tuple:
    """(seconds, peak GB, completed process) of ``code`` run as a fresh Python process."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code + f"; print('PEAK', {VMHWM_KB} / 2**20)"],
                         capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak = next((float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("PEAK")), 0.0)
    return seconds, peak, out


def _audit(cache, report, search, max_memory, index_rows=None) -> tuple:
    argv = ["audit", cache, "--report", report, "--threshold", "0.9", "--search", search]
    argv += ["--max-memory", max_memory] if max_memory else []
    lower = f"from cnncodes.classify.audit import near_pairs; near_pairs.INDEX_ROWS = {index_rows}; " \
        if index_rows is not None else ""
    return _child(f"import sys; {lower}from cnncodes import cli; rc = cli.main({argv!r}); sys.stdout.flush(); "
                  "rc and sys.exit(rc)")


def _queries(cache, n, q) -> str:
    """The first q rows' 10 nearest through the cache's index, in batches as the audit asks them:
    seconds, the rate, every row's time at that rate, and the planted copies answered first."""
    from cnncodes import open_cache
    from cnncodes.classify.index import open_index
    index = open_index(cache, "avgpool")
    with open_cache(cache) as c:
        mask = np.zeros(n, dtype=bool)
        mask[:q] = True
        Q = c.codes("avgpool", rows=mask).astype(np.float32)
    started = time.perf_counter()
    first = []
    for start in range(0, q, 256):
        rows = np.arange(start, min(q, start + 256))
        found, _ = index.search(Q[rows], 10, exclude=rows, budget_bytes=256 << 20)
        first.append(found[:, 0])
    seconds = time.perf_counter() - started
    planted = len(PLANTED) * PER_LEVEL
    twins = int((np.concatenate(first)[:planted] == np.arange(planted) + n // 2).sum()) if q >= planted else "-"
    return (f"{q:,} queries in {seconds:.1f} s ({seconds / q * 1000:.2f} ms each): all {n:,} rows ~{seconds / q * n:,.0f} s; "
            f"planted copy answered first {twins}/{planted}")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,30000")
    ap.add_argument("--max-memory", default=None, help="audit's --max-memory (its default is a quarter of RAM)")
    ap.add_argument("--index", default=None, metavar="KIND",
                    help="build the cache's faiss index first (`cnncodes index --kind KIND`; auto: the kind by size), "
                         "time the build, and audit with --search index")
    ap.add_argument("--compare", action="store_true",
                    help="with --index: also audit the same cache with the default search (exact or cells)")
    ap.add_argument("--search", default="auto", help="the audit's --search without --index (default auto)")
    ap.add_argument("--index-rows", type=int, default=None, metavar="N",
                    help="with --index: the index answers beyond N rows (near_pairs.INDEX_ROWS, default 100,000)")
    ap.add_argument("--queries", type=int, default=None, metavar="Q",
                    help="with --index: instead of the whole audit, time Q rows' 10 nearest through the index (as "
                         "the audit asks them) and give the time every row would take at that rate")
    ap.add_argument("--keep", default=None, metavar="DIR",
                    help="keep the synthetic caches in DIR and reuse them (a million rows take minutes to write)")
    args = ap.parse_args()
    print(f"machine: {cpu()} ({isa()}); load average at start {_load()}")
    levels = ", ".join(f"cos~{cos}" for _, cos in PLANTED)
    print(f"{'rows':>8} {'search':>8}{'index s':>9}{'audit s':>9}{'peak GB':>9}  planted copies found of {PER_LEVEL} "
          f"each ({levels}); load average after; the report's search")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or tmp
        os.makedirs(folder, exist_ok=True)
        for n in [int(s) for s in args.sizes.split(",")]:
            cache = os.path.join(folder, f"c{n}.h5")
            if not os.path.exists(cache):
                synthetic_cache(cache, n)
            runs = [("index", args.index)] if args.index else []
            runs += [(args.search, None)] if (args.compare or not args.index) else []
            for search, kind in runs:
                build = ""
                if kind:
                    argv = ["index", cache, "--rebuild", "--json"] + ([] if kind == "auto" else ["--kind", kind])
                    seconds, _, out = _child(f"import sys; from cnncodes import cli; sys.exit(cli.main({argv!r}))")
                    if out.returncode:
                        print(f"{n:>8}  index failed: {out.stderr[-300:]}", flush=True)
                        continue
                    build = f"{seconds:.1f}"
                if kind and args.queries:
                    print(f"{n:>8} {json.loads(out.stdout)['kind']:>8}{build:>9}  {_queries(cache, n, args.queries)}; "
                          f"load {_load()}", flush=True)
                    continue
                seconds, peak, out = _audit(cache, os.path.join(tmp, "r"), search, args.max_memory,
                                            args.index_rows if kind else None)
                if out.returncode:
                    print(f"{n:>8}  failed: {out.stderr[-300:]}", flush=True)
                    continue
                with open(os.path.join(tmp, "r", "audit.json")) as f:
                    found = json.load(f)
                print(f"{n:>8} {found['search_kind']:>8}{build:>9}{seconds:>9.1f}{peak:>9.2f}  "
                      f"{planted_found(os.path.join(tmp, 'r'), n)} = {sum(planted_found(os.path.join(tmp, 'r'), n))}; "
                      f"load {_load()}; {found['search']}", flush=True)


if __name__ == "__main__":
    main()
