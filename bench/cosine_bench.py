#!/usr/bin/env python
"""The exact cosine search (classify/cosine.py's top_k over an array in memory) against faiss's
IndexFlatIP on the same rows, for 1, 2, 8, 9 and 64 queries, in one process: seconds of each (best
of 3; one of 64 queries) and the fraction of faiss's rate ours reaches (goal: >= 0.8). The rows are
random unit vectors (faiss's flat index needs them unit for cosine; ours takes any scale and computes
the norms too).

    python bench/cosine_bench.py --rows 1000000 --width 1280
    python bench/cosine_bench.py --rows 300000 --width 4096
"""
import argparse
import sys
import time

import numpy as np

from _common import ROOT, cpu

sys.path.insert(0, ROOT)


def best(call, repeats):
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    import faiss
    from cnncodes.classify import cosine
    print(f"machine: {cpu()}; faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; "
          f"{cosine._cores()} scan threads; {args.rows:,} rows of {args.width}-d float32")
    rng = np.random.default_rng(0)
    X = rng.random((args.rows, args.width), dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    flat = faiss.IndexFlatIP(args.width)
    flat.add(X)
    for n_queries in (1, 2, 8, 9, 64):
        Q = X[:n_queries].copy()
        repeats = 3 if n_queries < 10 else 1
        theirs = best(lambda: flat.search(Q, 11), repeats)
        ours = best(lambda: cosine.top_k(Q, cosine.array_blocks(X, n_queries, 1 << 30), 10), repeats)
        print(f"{n_queries:>2} queries: faiss IndexFlatIP {theirs:.3f} s, ours {ours:.3f} s: "
              f"{theirs / ours:.2f} of faiss's rate")


if __name__ == "__main__":
    main()
