#!/usr/bin/env python
"""Cross-validation over photos with cnncodes.CodesTransformer: the network once per photo, against
the same pipeline extracting its codes afresh in every fold (what a transformer without a
persistent, content-keyed cache does). Both in this process, one after the other.

    python bench/transformer_bench.py ../shared/data/flowers5 --limit 150 --folds 5
"""
import argparse
import os
import tempfile
import time

import cnncodes
from cnncodes.extract.sources import scan_source


class PerFoldCodes(cnncodes.CodesTransformer):
    """The baseline: a new cache for every transform call, so each fold extracts its photos again."""

    def transform(self, X):
        with tempfile.TemporaryDirectory() as tmp:
            return cnncodes.CodesTransformer(**dict(self.get_params(), cache=os.path.join(tmp, "c.h5"))).transform(X)


def cpu() -> str:
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def main():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", help="a folder of class folders (or split/class folders)")
    parser.add_argument("--limit", type=int, default=150, help="photos used, spread over the classes")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    args = parser.parse_args()
    records = sorted(scan_source(args.photos).records, key=lambda r: r.path)
    step = max(1, len(records) // args.limit)
    picked = records[::step][:args.limit]
    paths, y = [r.abspath for r in picked], [r.label for r in picked]
    print(f"{len(paths)} photos of {len(set(y))} classes, {args.folds}-fold cross-validation, {args.backbone}; "
          f"CPU: {cpu()}")
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up outside the timings: torch's import, the weights read from disk, the first batch
        cnncodes.CodesTransformer(cache=os.path.join(tmp, "warm.h5"), backbone=args.backbone).fit_transform(paths[:4])
        for name, step_class in (("CodesTransformer (one cache)", cnncodes.CodesTransformer),
                                 ("codes extracted per fold", PerFoldCodes)):
            codes = step_class(cache=os.path.join(tmp, "codes.h5"), backbone=args.backbone)
            started = time.perf_counter()
            scores = cross_val_score(make_pipeline(codes, LogisticRegression(max_iter=1000)), paths, y,
                                     cv=args.folds)
            seconds = time.perf_counter() - started
            print(f"{name:<30} {seconds:7.1f} s   accuracy {scores.mean():.3f}")
        started = time.perf_counter()
        cross_val_score(make_pipeline(cnncodes.CodesTransformer(cache=os.path.join(tmp, "codes.h5"),
                                                                backbone=args.backbone),
                                      LogisticRegression(max_iter=1000)), paths, y, cv=args.folds)
        print(f"{'CodesTransformer, again':<30} {time.perf_counter() - started:7.1f} s   (every photo cached)")


if __name__ == "__main__":
    main()
