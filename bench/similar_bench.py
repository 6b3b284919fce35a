#!/usr/bin/env python
"""`similar` at scale: one query against a synthetic cache of N rows (audit_bench's clustered 1280-d
float16 codes with planted copies), as the whole `cnncodes similar --json` process, within
--max-memory; printed: seconds, peak memory, and whether the planted copy of the queried row came
first (row i + N/2 copies row i at cosine ~1).

    python bench/similar_bench.py --rows 1000000 --max-memory 1G
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from audit_bench import synthetic_cache
from _common import ROOT, VMHWM_KB, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--max-memory", default="1G")
    ap.add_argument("--keep", default=None, metavar="DIR", help="build (or reuse) the cache in DIR, not a temp folder")
    args = ap.parse_args()
    print(f"machine: {cpu()}")
    folder = args.keep or tempfile.mkdtemp()
    cache = os.path.join(folder, f"synthetic-{args.rows}.h5")
    if not os.path.exists(cache):
        t = time.perf_counter()
        synthetic_cache(cache, args.rows)
        print(f"built {args.rows:,} rows in {time.perf_counter() - t:.0f} s")
    probe = (f"import sys, json, resource; from cnncodes import cli; sys.stdout = open(sys.argv[1], 'w'); "
             f"cli.main(['similar', {cache!r}, sys.argv[2], '-k', '10', '--json', '--max-memory', {args.max_memory!r}]); "
             f"sys.stdout.close(); print({VMHWM_KB}, file=sys.stderr)")
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        from cnncodes.cache import open_cache
        with open_cache(cache) as c:
            query = c.paths[0]
            copy = c.paths[args.rows // 2]
        t = time.perf_counter()
        run = subprocess.run([sys.executable, "-c", probe, out.name, query], capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - t
        if run.returncode:
            sys.exit(run.stderr)
        (result,) = json.load(open(out.name))
    peak_gb = int(run.stderr.strip().splitlines()[-1]) / 2**20
    first = result["neighbours"][0]
    print(f"{args.rows:,} rows, --max-memory {args.max_memory}: {seconds:.1f} s for the whole process, "
          f"peak {peak_gb:.2f} GB; first answer {first['path']} at {first['score']:.4f} "
          f"({'the planted copy' if first['path'] == copy else 'NOT the planted copy'})")


if __name__ == "__main__":
    main()
