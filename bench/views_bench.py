#!/usr/bin/env python
"""Augmented views and test-time views on real photos: accuracy on the reported split per cache.

For each cache (made with `extract --views K`, K = 0, 2, 4, ...): every classifier of `compare`
(the same loop: the ensemble reuses its members) on identical splits (views train; the reported split is centre views only). Then, for logreg and
the best classifier, test-time views: the reported photos are encoded once more, centre and
mirror image, and each model is scored with and without averaging the two (what `predict --tta`
does). Labels of the re-encoded photos come from the cache rows with the same path.

    python bench/views_bench.py /tmp/views/k0.h5 /tmp/views/k2.h5 /tmp/views/k4.h5
"""
import argparse
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from cnncodes.cache import open_cache  # noqa: E402
from cnncodes.classify import fit_and_evaluate, read_codes  # noqa: E402
from cnncodes.classify.registry import CODE_HEADS  # noqa: E402


def reported_photos(data):
    """(absolute paths, labels) of the reported split's centre rows."""
    from cnncodes.classify import plan_splits
    plan = plan_splits(data.splits, data.y, 0, data.views)
    rows = np.flatnonzero(plan.eval_mask)
    with open_cache(data.path) as c:
        root = c.fingerprint.provenance.get("data_root")
        paths = c.paths_of(rows)
    return [os.path.join(root, p) for p in paths], data.y[rows]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("caches", nargs="+")
    ap.add_argument("--classifiers", default=None, help="comma-separated (default: all)")
    args = ap.parse_args()
    from cnncodes.extract.by_fingerprint import encode_images
    mirrored_codes = None
    for cache in args.caches:
        data = read_codes(cache)
        with open_cache(cache) as c:
            views = (c.fingerprint.views or {}).get("count", 0)
        fitted = {}  # compare's loop, keeping the models for the test-time views below
        for name in args.classifiers.split(",") if args.classifiers else list(CODE_HEADS):
            fitted[name] = fit_and_evaluate(data, name, fitted=fitted)
        results = [result for result, _ in fitted.values()]
        best = max(results, key=lambda r: r["accuracy"])
        print(f"\n{cache}: views {views}, {len(data.y)} rows; reported {results[0]['eval_split']} "
              f"({results[0]['n_eval']} photos)")
        for r in results:
            print(f"  {r['classifier']:<9}{r['accuracy']:.4f}  fit {r['fit_seconds']:.1f} s  {r['params']}")
        if mirrored_codes is None:  # the same photos for every cache: encode them once
            paths, labels = reported_photos(data)
            ok, mirrored_codes, _ = encode_images(data.fingerprint, paths, mirrored=True, layer=data.layer)
            assert ok == paths, "every reported photo must encode"
        for name in dict.fromkeys(["logreg", best["classifier"]]):
            model = fitted[name][1]
            centre = model.predict_proba(mirrored_codes[:, 0])
            both = (centre + model.predict_proba(mirrored_codes[:, 1])) / 2
            plain = float((model.classes_[centre.argmax(1)] == labels).mean())
            tta = float((model.classes_[both.argmax(1)] == labels).mean())
            print(f"  {name:<9}re-encoded centre {plain:.4f}, with --tta (centre + mirror) {tta:.4f}")


if __name__ == "__main__":
    main()
