#!/usr/bin/env python
"""How stage one's costs grow with the cache: no-op re-run, adding 32 photos, `info`, peak memory.

Builds synthetic caches of 10k, 100k and 1M rows in the documented schema (1280-d float16 codes,
the efficientnet_lite0 fingerprint; their paths are under another folder, as a cache that also
holds rows from elsewhere), then times each operation in a fresh process so that its peak
resident memory is its own. The same operations on an empty cache are the baseline.

    python bench/scale_bench.py --photos ../shared/data/flowers5 --sizes 10000,100000,1000000
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from _common import VMHWM_KB, cpu  # noqa: E402

# A forward pass at 64 pixels keeps the 32 new photos cheap: the bench measures the cache's costs.
EXTRACT_ARGS = ["--backbone", "efficientnet_lite0", "--crop-size", "64", "--no-progress", "--workers", "0"]

CHILD = r"""
import json, sys, time
started = time.perf_counter()
from cnncodes import cli
code = cli.main({argv!r})
print(json.dumps({{"seconds": time.perf_counter() - started, "peak_mb": PEAK / 1024, "rc": code}}))
""".replace("PEAK", VMHWM_KB)


def timed_cli(argv) -> dict:
    """Run `pipeline.py ARGV` in a fresh process; its wall time (after interpreter start) and peak RSS."""
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT, argv=[str(a) for a in argv])],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"pipeline.py {' '.join(map(str, argv))} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def synthetic_cache(path, rows, photos_root, chunk=65536):
    """``rows`` rows of random codes under the fingerprint `extract` uses with EXTRACT_ARGS."""
    import numpy as np
    from cnncodes.cache import open_for_append
    from cnncodes.extract import Extractor, RunOptions
    from cnncodes.extract.config import CodeSpec
    extractor = Extractor.for_new_codes(CodeSpec("efficientnet_lite0", crop_size=64), data_root=photos_root,
                                        options=RunOptions(device="cpu"))
    rng = np.random.default_rng(0)
    classes = [f"class{c}" for c in range(5)]
    with open_for_append(path, extractor.fingerprint, extractor.widths, classes) as session:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            ids = range(start, start + n)
            session.add_rows([f"elsewhere/class{i % 5}/{i:08d}.jpg" for i in ids], [f"{i:064x}" for i in ids],
                             [("train", "val", "test")[i % 3] for i in ids], [f"class{i % 5}" for i in ids],
                             [(1000 + i, i, i) for i in ids],
                             {"avgpool": rng.standard_normal((n, 1280), dtype=np.float32).astype(np.float16)})
            session.commit_shard()


def photo_folder(src, dst, count):
    """``count`` photos from src (class folders, or split/class folders), taken in turn from each
    class and linked into dst/<class>/."""
    src = os.path.abspath(src)
    by_class = {}
    for dirpath, _, files in sorted(os.walk(src)):
        photos = [os.path.join(dirpath, n) for n in sorted(files) if n.lower().endswith((".jpg", ".jpeg", ".png"))]
        if photos:
            by_class.setdefault(os.path.basename(dirpath), []).extend(photos)
    taken = 0
    while taken < count and any(by_class.values()):
        for cls, photos in by_class.items():
            if photos and taken < count:
                os.makedirs(os.path.join(dst, cls), exist_ok=True)
                source = photos.pop(0)
                os.symlink(source, os.path.join(dst, cls, f"{taken:04d}-{os.path.basename(source)}"))
                taken += 1
    return dst


def measure(size, photos, work) -> dict:
    cache = os.path.join(work, f"c{size}.h5")
    built = time.perf_counter()
    if size:  # in a child too: a forked child's peak RSS would start from this process's
        subprocess.run([sys.executable, __file__, "--build", cache, str(size), photos], check=True)
    build_seconds = time.perf_counter() - built
    add = timed_cli(["extract", photos, "--cache", cache, *EXTRACT_ARGS])
    noop = timed_cli(["extract", photos, "--cache", cache, *EXTRACT_ARGS])
    info = timed_cli(["info", cache])
    shutil.rmtree(cache + ".shards", ignore_errors=True)
    os.remove(cache)
    return {"rows": size, "build_s": build_seconds, "add32_s": add["seconds"], "add32_peak_mb": add["peak_mb"],
            "noop_s": noop["seconds"], "noop_peak_mb": noop["peak_mb"], "info_s": info["seconds"],
            "info_peak_mb": info["peak_mb"]}


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sized = [r for r in results if r["rows"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in [("add32_s", "add 32 photos"), ("noop_s", "no-op re-run"), ("info_s", "info")]:
        ax.loglog([r["rows"] for r in sized], [r[key] for r in sized], "o-", label=label)
        ax.axhline(results[0][key], ls=":", lw=1, color=ax.lines[-1].get_color())
    ax.set_xlabel("rows already in the cache")
    ax.set_ylabel("seconds (whole process; dotted: empty cache)")
    ax.set_title("stage one cost against cache size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default=os.path.join(ROOT, "..", "shared", "data", "flowers5"))
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--plot", default=os.path.join(ROOT, "bench", "scale_bench.png"))
    parser.add_argument("--work", default=None, help="folder for the synthetic caches (default: a temp folder)")
    parser.add_argument("--build", nargs=3, metavar=("CACHE", "ROWS", "PHOTOS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        return synthetic_cache(args.build[0], int(args.build[1]), args.build[2])
    work = args.work or tempfile.mkdtemp(prefix="scale-bench-")
    photos = photo_folder(os.path.abspath(args.photos), os.path.join(work, "photos"), 32)
    print(f"CPU: {cpu()}")
    results = []
    for size in [0] + [int(s) for s in args.sizes.split(",")]:
        results.append(measure(size, photos, work))
        r, base = results[-1], results[0]
        print(f"{r['rows']:>9,} rows: add 32 {r['add32_s']:6.2f} s ({r['add32_s'] - base['add32_s']:+.2f} vs empty), "
              f"peak {r['add32_peak_mb']:6.0f} MB | no-op {r['noop_s']:5.2f} s, peak {r['noop_peak_mb']:6.0f} MB | "
              f"info {r['info_s']:5.2f} s, peak {r['info_peak_mb']:5.0f} MB | built in {r['build_s']:.0f} s",
              flush=True)
    plot(results, args.plot)
    print(f"plot: {args.plot}")
    print(json.dumps(results))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
