#!/usr/bin/env python
"""What CodesTransformer costs beyond the network: scikit-learn's cross-validation and grid search
over photos, against one plain extract of the same photos, in one process, one after the other.

    python bench/transformer_bench.py ../shared/data/flowers5 --photos 250 400

For each size: one plain extract (cnncodes.extract_codes into a new cache: the network once per
photo, nothing else); 5-fold cross_val_score through CodesTransformer into a new cache (every
photo extracted once, in the first fold); the same again with every photo cached; and a
GridSearchCV of 4 C values x 5 folds into a new cache. Each is timed whole and, apart, the time
spent inside CodesTransformer (the classifier's fits are the user's cost, the same with any
features: RidgeClassifier by default, which fits in milliseconds). Goals (issue 48): CV <= 1.2x the plain extract, the cached rerun's transformer time
<= 0.1x, the grid search <= 1.3x.
"""
import argparse
import os
import tempfile
import time

from _common import cpu, isa

import cnncodes
from cnncodes.extract.sources import scan_source


class TimedCodes(cnncodes.CodesTransformer):
    """CodesTransformer that adds the seconds its transform calls take to a class-wide counter
    (scikit-learn clones the step for every fold and candidate)."""
    seconds = 0.0
    calls = 0

    def transform(self, X):
        started = time.perf_counter()
        try:
            return super().transform(X)
        finally:
            TimedCodes.seconds += time.perf_counter() - started
            TimedCodes.calls += 1


def picked_photos(folder, n):
    records = sorted(scan_source(folder).records, key=lambda r: r.path)
    step = max(1, len(records) // n)
    picked = records[::step][:n]
    return [r.abspath for r in picked], [r.label for r in picked]


def timed(what):
    TimedCodes.seconds, TimedCodes.calls = 0.0, 0
    started = time.perf_counter()
    what()
    return time.perf_counter() - started, TimedCodes.seconds, TimedCodes.calls


def main():
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", help="a folder of class folders (or split/class folders)")
    parser.add_argument("--photos", dest="sizes", type=int, nargs="+", default=[250, 400],
                        help="how many photos, spread over the classes (one run per size)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--classifier", choices=("ridge", "logreg"), default="ridge",
                        help="after StandardScaler: RidgeClassifier (fits in milliseconds, so the whole "
                             "figures show the transformer) or LogisticRegression (about a second a fit here)")
    args = parser.parse_args()
    classifier, grid_key = ((RidgeClassifier(), "clf__alpha") if args.classifier == "ridge" else
                            (LogisticRegression(max_iter=1000), "clf__C"))
    print(f"CPU: {cpu()} ({isa()}); {args.backbone}; StandardScaler and {type(classifier).__name__} on the codes")
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up outside the timings: torch's import, the weights read from disk, the first batches
        warm_paths, _ = picked_photos(args.photos, 8)
        cnncodes.extract_codes(warm_paths, os.path.join(tmp, "warm.h5"), backbone=args.backbone)
        for n in args.sizes:
            paths, y = picked_photos(args.photos, n)
            folder = os.path.join(tmp, str(n))
            os.makedirs(folder)

            def pipeline(cache):
                return Pipeline([("codes", TimedCodes(cache=os.path.join(folder, cache), backbone=args.backbone)),
                                 ("scale", StandardScaler()), ("clf", classifier)])
            plain, _, _ = timed(lambda: cnncodes.extract_codes(paths, os.path.join(folder, "plain.h5"),
                                                               backbone=args.backbone))
            cv = timed(lambda: cross_val_score(pipeline("cv.h5"), paths, y, cv=5))
            again = timed(lambda: cross_val_score(pipeline("cv.h5"), paths, y, cv=5))
            grid = timed(lambda: GridSearchCV(pipeline("grid.h5"), {grid_key: [0.01, 0.1, 1.0, 10.0]}, cv=5)
                         .fit(paths, y))
            print(f"\n{len(paths)} photos of {len(set(y))} classes; one plain extract: {plain:.2f} s")
            print(f"{'':<34}{'whole':>9}{'/ plain':>9}{'transformer':>13}{'/ plain':>9}{'calls':>7}  goal")
            for name, (whole, inside, calls), goal in (("5-fold CV, new cache", cv, "whole <= 1.2"),
                                                       ("5-fold CV again, all cached", again,
                                                        "transformer <= 0.1"),
                                                       ("GridSearchCV 4 values x 5 folds", grid, "whole <= 1.3")):
                print(f"{name:<34}{whole:>8.2f}s{whole / plain:>9.2f}{inside:>12.2f}s{inside / plain:>9.3f}"
                      f"{calls:>7}  {goal}")


if __name__ == "__main__":
    main()
