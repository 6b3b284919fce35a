#!/usr/bin/env python
"""Calibrate the audit's near-duplicate threshold for a backbone on planted copies.

N photos are copied four ways (JPEG re-encoded at quality 60, resized to 80%, centre-cropped to
90%, mirrored); originals and copies go through `extract` (the backbone's default layers, as the
audit reads them). Printed per cosine threshold: the recall on the copies (each copy against its
original, per kind and overall) and the false-pair rate over every pair of distinct originals.
The false pairs are counted apart within a class (the hard ones: two different daisies) and
across classes. Suggested default: the lowest threshold whose within-class false-pair rate is at
most --max-false; --write records it (with its recall and false-pair rate) in the table the audit
reads, classify/audit/thresholds.json.

    python bench/audit_calibration.py ../shared/data/flowers5 --backbone efficientnet_lite0 --photos 300
"""
import argparse
import itertools
import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image, ImageOps

from cnncodes.classify import read_codes  # noqa: E402
from cnncodes.classify.audit.near_pairs import normalised  # noqa: E402
from cnncodes.extract import ExtractConfig, run_extract  # noqa: E402
from cnncodes.extract.sources import scan_source  # noqa: E402
from _common import cpu  # noqa: E402

KINDS = {
    "jpeg q60": lambda img: img,  # saved at quality 60 below
    "resized 80%": lambda img: img.resize((int(img.width * 0.8), int(img.height * 0.8)), Image.BICUBIC),
    "cropped 90%": lambda img: ImageOps.crop(img, (int(img.width * 0.05), int(img.height * 0.05)) * 2),
    "mirrored": ImageOps.mirror,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--layers", default=None, help="layer(s) as the audit reads them, e.g. avgpool or stage6 "
                    "(default every cached layer, side by side)")
    ap.add_argument("--max-false", type=float, default=1e-4,
                    help="within-class false-pair rate the suggestion allows (pairs grow as N^2: 1e-4 of "
                         "flowers5's ~970,000 within-class pairs is about 100)")
    ap.add_argument("--write", action="store_true",
                    help="record the suggested threshold in classify/audit/thresholds.json, which the audit reads")
    args = ap.parse_args()
    machine = cpu()
    records = scan_source(args.data).records
    picked = [records[i] for i in np.random.default_rng(0).choice(len(records), args.photos, replace=False)]
    tmp = tempfile.mkdtemp(prefix="cnncodes-audit-cal-")
    try:
        folder = os.path.join(tmp, "photos")
        os.makedirs(folder)
        for n, r in enumerate(picked):
            with Image.open(r.abspath) as img:
                img = img.convert("RGB")
                img.save(os.path.join(folder, f"{n:05d}-original.jpg"), quality=95)
                for k, (kind, change) in enumerate(KINDS.items()):
                    change(img).save(os.path.join(folder, f"{n:05d}-copy{k}.jpg"), quality=60 if k == 0 else 95)
        cache = os.path.join(tmp, "c.h5")
        run_extract(ExtractConfig(folder, cache, backbone=args.backbone, weights=args.weights, progress=False))
        data = read_codes(cache, args.layers)
        from cnncodes.cache import open_cache
        with open_cache(cache) as c:
            names = [os.path.basename(p) for p in c.paths]
        Xn = normalised(data.X)
        at = {name: i for i, name in enumerate(names)}
        originals = [at[f"{n:05d}-original.jpg"] for n in range(len(picked))]
        positives = {kind: np.array([float(Xn[at[f"{n:05d}-copy{k}.jpg"]] @ Xn[originals[n]])
                                     for n in range(len(picked))]) for k, kind in enumerate(KINDS)}
        O = Xn[originals]
        S = O @ O.T
        keys = [picked[n].abspath for n in range(len(picked))]
        pairs = [(a, b) for a, b in itertools.combinations(range(len(picked)), 2) if keys[a] != keys[b]]
        same = np.array([picked[a].label == picked[b].label for a, b in pairs])
        cosines = np.array([S[a, b] for a, b in pairs])
        within, across = cosines[same], cosines[~same]
        print(f"machine: {machine}; {args.backbone} ({data.layer}), {len(picked)} photos of {args.data}, "
              f"{len(within):,} pairs of distinct photos within a class, {len(across):,} across")
        print(f"{'threshold':>9}  " + "  ".join(f"{k:>11}" for k in KINDS)
              + f"  {'recall':>7}  {'false within':>12}  {'false across':>12}")
        suggestion = None
        for t in np.round(np.arange(0.70, 0.991, 0.01), 2):
            recalls = [float((p >= t).mean()) for p in positives.values()]
            false, false_across = float((within >= t).mean()), float((across >= t).mean())
            if suggestion is None and false <= args.max_false:
                suggestion = (t, float(np.mean(recalls)), false)
            print(f"{t:>9.2f}  " + "  ".join(f"{r:>11.3f}" for r in recalls)
                  + f"  {np.mean(recalls):>7.3f}  {false:>12.5f}  {false_across:>12.5f}")
        if suggestion:
            print(f"suggested default: {suggestion[0]:.2f} (recall {suggestion[1]:.3f}, within-class false-pair rate "
                  f"{suggestion[2]:.5f} <= {args.max_false:g})")
            if args.write:
                _write_threshold(args.backbone, data.layer, suggestion, len(picked), os.path.basename(
                    os.path.normpath(args.data)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_threshold(backbone, layer, suggestion, photos, data_name):
    """Record the suggested threshold in the audit's table, atomically (a rename), keeping the rest."""
    from cnncodes.classify.audit import THRESHOLDS_FILE
    with open(THRESHOLDS_FILE) as f:
        table = json.load(f)
    table["calibrated"][f"{backbone}/{layer}"] = {
        "threshold": float(suggestion[0]), "recall": round(suggestion[1], 3),
        "within_class_false_pair_rate": round(suggestion[2], 5), "photos": photos, "data": data_name}
    with open(THRESHOLDS_FILE + ".tmp", "w") as f:
        json.dump(table, f, indent=2)
        f.write("\n")
    os.replace(THRESHOLDS_FILE + ".tmp", THRESHOLDS_FILE)
    print(f"written: {backbone}/{layer} = {suggestion[0]:.2f} in {THRESHOLDS_FILE}")


if __name__ == "__main__":
    main()
