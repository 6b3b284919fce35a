#!/usr/bin/env python
"""Is a reduced precision safe? Codes and downstream accuracy against fp32, on the same images.

Extracts the same images once per precision (each into its own cache, as `pipeline.py extract`
does), then prints per precision: images/s of the extract loop, cosine similarity of every
row's codes to the fp32 codes (min, 1st percentile, mean), and the logreg accuracy on the
reported split (val when the folder has one) with the same sweep and splits.

Bars for a reduced-precision default: cosine >= 0.999 and accuracy within 0.3 points of fp32.

--reference CACHE adds a row for codes of the same images made elsewhere (another device, say
the CPU's fp32 codes beside a GPU run), matched by path:

    python bench/precision_check.py cnncodes/demo_data/flowers --backbone efficientnet_lite0 --device cuda \
        --precisions fp32,fp16,bf16 --reference cpu_fp32.h5

    python bench/precision_check.py ../shared/data/flowers5 --backbone vgg16 --weights random \\
        --precisions fp32,int8@onednn,int8@x86 --limit 1000
"""
import argparse
import os
import shutil
import tempfile

import numpy as np

from cnncodes.cache import open_cache  # noqa: E402
from cnncodes.classify import fit_and_evaluate, read_codes  # noqa: E402
from cnncodes.extract import ExtractConfig, options, run_extract  # noqa: E402
from _common import subset_folder  # noqa: E402


def cosines(reference, other):
    a = reference / np.linalg.norm(reference, axis=1, keepdims=True).clip(1e-12)
    b = other / np.linalg.norm(other, axis=1, keepdims=True).clip(1e-12)
    return (a * b).sum(axis=1)


def codes_rows_fit(cache, classifier, layer=None):
    """(codes, {path: row of its centre view}, the classifier's result) of one cache."""
    data = read_codes(cache, layer)
    with open_cache(cache) as c:
        rows = {path: i for i, (path, view) in enumerate(zip(c.paths, c.views)) if view == 0}
    return data, rows, fit_and_evaluate(data, classifier)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--backbone", default="vgg16")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--precisions", default="fp32,int8@onednn,int8@x86",
                    help="comma-separated, int8@ENGINE for an int8 engine; the first is the reference")
    ap.add_argument("--limit", type=int, default=1000, help="images, spread over split folders and classes")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--classifier", default="logreg")
    ap.add_argument("--reference", help="a cache of the same images made elsewhere, compared like a precision")
    args = ap.parse_args()
    precisions = args.precisions.split(",")

    tmp = tempfile.mkdtemp(prefix="cnncodes-precision-")
    try:
        picked = subset_folder(args.data, args.limit, os.path.join(tmp, "data"))
        results = {}
        for name in precisions:
            precision, _, engine = name.partition("@")
            cache = os.path.join(tmp, f"{name}.h5")
            summary = run_extract(ExtractConfig(os.path.join(tmp, "data"), cache, backbone=args.backbone,
                                                weights=args.weights, device=args.device, precision=precision,
                                                int8_engine=engine or options.DEFAULT_INT8_ENGINE, progress=False))
            results[name] = (summary, *codes_rows_fit(cache, args.classifier))
        if args.reference:
            layer = results[precisions[0]][1].layer
            results["reference"] = (None, *codes_rows_fit(args.reference, args.classifier, layer))
            precisions.append("reference")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ref_summary, ref_data, ref_rows, ref_fit = results[precisions[0]]
    print(f"backbone {args.backbone}, weights {args.weights or 'pretrained'}, device {args.device}, "
          f"images {len(picked)}, {args.classifier} on {ref_fit['eval_split']} ({ref_fit['n_eval']} rows)")
    print(f"{'precision':<12}{'images/s':>9}{'cos min':>10}{'cos p1':>10}{'cos mean':>10}{'accuracy':>10}{'vs ref':>9}")
    for precision in precisions:
        summary, data, rows, fit = results[precision]
        order = [rows[p] for p in ref_rows]
        cos = cosines(ref_data.X[list(ref_rows.values())], data.X[order])
        speed = (summary.written + summary.failed) / summary.loop_seconds if summary else float("nan")
        delta = 100 * (fit["accuracy"] - ref_fit["accuracy"])
        print(f"{precision:<12}{speed:>9.2f}{cos.min():>10.5f}{np.percentile(cos, 1):>10.5f}{cos.mean():>10.5f}"
              f"{fit['accuracy']:>10.4f}{delta:>+8.2f}p")


if __name__ == "__main__":
    main()
