#!/usr/bin/env python
"""`similar` at scale, in one run: the cache's faiss index (`cnncodes index`) beside the exact search
(the cosine engine, classify/cosine.py) and beside faiss used directly, on synthetic Lite0-shaped
codes: 1280-d float16, non-negative (pooled ReLU6 activations), of low intrinsic dimension (1,000
clusters in a 64-d latent space, mapped to 1280-d, rectified), with planted near copies
(row i + N/2 copies row i). Printed:

- building the index: seconds and the child's peak memory;
- one query in a warm process (the index loaded): median milliseconds and recall@10 against exact;
- faiss directly: IndexIVFPQ with the same parameters on the same unit rows, without the cache's
  row map and exact re-ranking; and IndexFlatIP against our exact top_k on the same rows in memory
  (queries per second of each, the ratio);
- `cnncodes similar --json` as a whole process, through the index and with --exact;
- adding 1,000 photos to the indexed cache: the seconds of the incremental `index`.

    python bench/similar_bench.py --rows 1000000 --keep /tmp/bench
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from _common import ROOT, VMHWM_KB, cpu

WIDTH = 1280
LATENT = 64
CLUSTERS = 1000


def lite0_like(n, seed=0, first=0):
    """Codes [n, WIDTH] float32 in the shape of Lite0's pooled features; rows first..first+n of one
    seeded family (the mapping is fixed by seed 0, the rows by ``seed``)."""
    fixed = np.random.default_rng(0)
    centres = fixed.normal(0, 1, (CLUSTERS, LATENT)).astype(np.float32)
    mapping = fixed.normal(0, 1 / np.sqrt(LATENT), (LATENT, WIDTH)).astype(np.float32)
    rng = np.random.default_rng(seed + 1 + first)
    z = centres[rng.integers(0, CLUSTERS, n)] + rng.normal(0, 0.6, (n, LATENT)).astype(np.float32)
    X = np.clip(z @ mapping + 0.3, 0, 6) + np.abs(rng.normal(0, 0.05, (n, WIDTH))).astype(np.float32)
    return X.astype(np.float32)


def build_cache(path, n, first=0, seed=0, shard_rows=16384):
    from cnncodes.cache import Fingerprint, open_for_append
    fingerprint = Fingerprint(backbone="synthetic", layers=("avgpool",), weights="random:0", preprocess={"crop": 224})
    names = [f"c{k}" for k in range(5)]
    copies = np.random.default_rng(99)
    held = None
    with open_for_append(path, fingerprint, {"avgpool": WIDTH}, names, background=False) as session:
        for start in range(first, first + n, shard_rows):
            stop = min(first + n, start + shard_rows)
            X = lite0_like(stop - start, seed, start)
            if first == 0 and start == 0:
                held = X[:80].copy()
            if first == 0 and start <= n // 2 < stop:  # planted copies of rows 0..79
                at = n // 2 - start
                X[at:at + 80] = held + copies.normal(0, 0.02, (80, WIDTH))
            session.add_rows([f"{names[i % 5]}/{i:08d}.jpg" for i in range(start, stop)],
                             [f"{i:064x}" for i in range(start, stop)], ["train"] * (stop - start),
                             [names[i % 5] for i in range(start, stop)], [(1, 1, i) for i in range(start, stop)],
                             {"avgpool": X})
            session.commit_shard()


def child(code, *args):
    """(seconds, peak GB, stdout) of a fresh Python process running ``code``."""
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", code + f"\nprint('PEAK', {VMHWM_KB}, file=sys.stderr)", *args],
                         capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if run.returncode:
        sys.exit(run.stderr)
    peak = int(run.stderr.strip().splitlines()[-1].split()[1]) / 2**20
    return seconds, peak, run.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200, help="sampled queries timed one at a time")
    ap.add_argument("--kind", default=None, help="the index's kind (default: by size)")
    ap.add_argument("--max-memory", default="1G")
    ap.add_argument("--keep", default=None, metavar="DIR", help="build (or reuse) the cache in DIR")
    ap.add_argument("--shard-rows", type=int, default=16384,
                    help="rows per commit while building the cache (more: fewer merges for millions of rows)")
    ap.add_argument("--flat-rows", type=int, default=1_000_000,
                    help="faiss's IndexFlatIP and our exact top_k compared in memory on at most this many rows "
                         "(float32 unit copies of both)")
    ap.add_argument("--reuse-index", action="store_true", help="with --keep: keep the cache's index (brought up to "
                    "date) instead of building it again")
    args = ap.parse_args()
    import faiss

    from cnncodes.classify import cosine, index as ix
    print(f"machine: {cpu()}; faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    folder = args.keep or tempfile.mkdtemp()
    cache = os.path.join(folder, f"lite0-like-{args.rows}.h5")
    if not os.path.exists(cache):
        t = time.perf_counter()
        build_cache(cache, args.rows, shard_rows=args.shard_rows)
        print(f"built a cache of {args.rows:,} rows in {time.perf_counter() - t:.0f} s")
    if not (args.reuse_index and ix.read_manifest(cache, "avgpool")):
        import shutil
        shutil.rmtree(cache + ".faiss", ignore_errors=True)
        kind = f", kind={args.kind!r}" if args.kind else ""
        seconds, peak, out = child(f"import sys, json, cnncodes; s = cnncodes.index(sys.argv[1], max_memory='1G'"
                                   f"{kind}); print(json.dumps(s.to_dict()))", cache)
        built = json.loads(out)
        print(f"index: {built['kind']} of {built['rows']:,} rows built in {seconds:.1f} s (whole process), "
              f"peak {peak:.2f} GB")
    else:
        seconds, peak, out = child("import sys, json, cnncodes; print(json.dumps(cnncodes.index(sys.argv[1])"
                                   ".to_dict()))", cache)
        print(f"index: the kept {json.loads(out)['kind']} index, brought up to date in {seconds:.1f} s")

    # one query at a time in a warm process, against the exact answers
    from cnncodes.cache import open_cache
    rng = np.random.default_rng(1)
    with open_cache(cache) as c:
        rows = np.sort(rng.choice(len(c), args.queries, replace=False))
        rows_all = np.arange(len(c))
        mask = np.zeros(len(c), dtype=bool)
        mask[rows] = True
        Q = c.codes("avgpool", rows=mask)
        query_path, copy_path = c.paths_of([0, args.rows // 2])
    t = time.perf_counter()
    truth, _ = cosine.top_k(Q, cosine.cache_blocks(cache, "avgpool", 1 << 30), 10, rows)
    exact_streamed = time.perf_counter() - t
    index = ix.open_index(cache, "avgpool")
    index.search(Q[:1], 10, rows[:1])  # warm
    times, found = [], []
    for i in range(len(Q)):
        t = time.perf_counter()
        r, _ = index.search(Q[i:i + 1], 10, rows[i:i + 1])
        times.append(time.perf_counter() - t)
        found.append(r[0])
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    print(f"one query, warm, through the index: median {1000 * np.median(times):.1f} ms (p90 "
          f"{1000 * np.percentile(times, 90):.1f}), recall@10 {recall:.3f} against exact on {len(Q)} queries")
    print(f"exact, streamed from the cache (--max-memory 1G): {exact_streamed:.1f} s for the {len(Q)} queries in one "
          f"pass, {exact_streamed:.1f} s for one (the pass is the cost)")

    # faiss directly on the same unit rows: the same IVF-PQ (no row map, no exact re-ranking) and flat
    flat_rows = min(args.rows, args.flat_rows)
    U = np.empty((flat_rows, WIDTH), dtype=np.float32)
    for block_rows, codes in cosine.cache_blocks(cache, "avgpool", 1 << 30, mask=np.arange(len(rows_all)) < flat_rows):
        U[block_rows] = cosine.unit(codes)
    Qu = cosine.unit(Q)
    if index.kind in ("ivf", "ivfpq"):
        ivf = faiss.extract_index_ivf(index.index)
        t0 = time.perf_counter()
        for i in range(len(Qu)):
            index.index.search(Qu[i:i + 1], 11)
        direct = (time.perf_counter() - t0) / len(Qu)
        _, ids = index.index.search(Qu, 11)
        direct_recall = np.mean([len(set(a[a != r][:10].tolist()) & set(b.tolist())) / 10
                                 for a, r, b in zip(ids, rows, truth)])
        print(f"faiss directly, the same {index.kind} (nlist {ivf.nlist}, nprobe {ivf.nprobe}), no re-ranking: "
              f"{1000 * direct:.1f} ms a query, recall@10 {direct_recall:.3f}")
    flat = faiss.IndexFlatIP(WIDTH)
    flat.add(U)
    batch = Qu[:64]
    t = time.perf_counter()
    flat.search(batch, 11)
    faiss_flat = time.perf_counter() - t
    t = time.perf_counter()
    cosine.top_k(batch, cosine.array_blocks(U, len(batch), 1 << 30), 10)
    ours = time.perf_counter() - t
    faiss_one = ours_one = float("inf")
    for i in range(5):  # one query is under a second: the best of 5, the two alternated
        t = time.perf_counter()
        flat.search(batch[i:i + 1], 11)
        faiss_one = min(faiss_one, time.perf_counter() - t)
        t = time.perf_counter()
        cosine.top_k(batch[i:i + 1], cosine.array_blocks(U, 1, 1 << 30), 10)
        ours_one = min(ours_one, time.perf_counter() - t)
    on = f" (on the first {flat_rows:,} rows)" if flat_rows < args.rows else ""
    print(f"exact in memory{on}, 64 queries: our top_k {ours:.2f} s, faiss IndexFlatIP {faiss_flat:.2f} s: "
          f"{faiss_flat / ours:.2f} of faiss's rate; one query (best of 5): {ours_one:.2f} s vs {faiss_one:.2f} s "
          f"({faiss_one / ours_one:.2f})")
    del U, flat

    # whole processes
    probe = ("import sys, json; from cnncodes import cli; assert cli.main(['similar', sys.argv[1], sys.argv[2], "
             "'-k', '10', '--json', '--max-memory', '1G'] + sys.argv[3:]) == 0")
    for extra, name in (([], "through the index"), (["--exact"], "--exact")):
        seconds, peak, out = child(probe, cache, query_path, *extra)
        first = json.loads(out)["queries"][0]["neighbours"][0]
        print(f"`cnncodes similar --json` {name}: {seconds:.2f} s as a whole process, peak {peak:.2f} GB; first "
              f"answer {'the planted copy' if first['path'] == copy_path else 'NOT the planted copy'} at "
              f"{first['score']:.4f}")

    # 1,000 photos more (numbered after every row the cache has had), then `index` again
    with open_cache(cache) as c:
        after = max([args.rows] + [int(os.path.basename(p)[:-4]) + 1 for p in c.paths_of([len(c) - 1])])
    build_cache(cache, 1000, first=after, seed=5)
    seconds, peak, out = child("import sys, json, cnncodes; print(json.dumps(cnncodes.index(sys.argv[1]).to_dict()))",
                               cache)
    done = json.loads(out)
    print(f"1,000 photos added, then `index`: {done['seconds']:.2f} s of index work ({seconds:.1f} s as a whole "
          f"process), {done['added']} added, rebuilt {done['rebuilt']}")


if __name__ == "__main__":
    main()
