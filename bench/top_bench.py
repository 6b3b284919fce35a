#!/usr/bin/env python
"""The network's own top trained on cached maps against the heads on codes, on identical splits.

Each cache holds codes and a map layer of the same photos (one extract run:
`--layer avgpool,stage6,stage7_map`), so every classifier sees the same rows, the same selection
slice and the same reported split. Prints one row per classifier: reported accuracy (95% CI),
fit seconds, and the chosen parameters.

    python bench/top_bench.py k0.h5 k2.h5 --codes avgpool+stage6 --maps stage7_map
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from cache import open_cache  # noqa: E402
from classify import compare, load_codes  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("caches", nargs="+")
    ap.add_argument("--codes", default=None, help="the layer(s) of codes (default: fit's default)")
    ap.add_argument("--maps", required=True, help="the map layer")
    ap.add_argument("--code-heads", default=None, help="default: every head on codes")
    ap.add_argument("--map-heads", default=None, help="default: every head on maps")
    args = ap.parse_args()
    for cache in args.caches:
        with open_cache(cache) as c:
            views = (c.fingerprint.views or {}).get("count", 0)
            rows = len(c)
        print(f"\n{cache}: {rows} rows, --views {views}")
        print(f"{'layer':<16}{'classifier':<10}{'accuracy':>9}  {'95% CI':<12}{'fit s':>8}  chosen")
        for layer, heads in ((args.codes, args.code_heads), (args.maps, args.map_heads)):
            data = load_codes(cache, layer)
            for r in compare(data, heads.split(",") if heads else None):
                if "skipped" in r:
                    print(f"{data.layer:<16}{r['classifier']:<10} skipped: {r['skipped']}")
                    continue
                low, high = r["accuracy_ci95"]
                chosen = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
                print(f"{data.layer:<16}{r['classifier']:<10}{r['accuracy']:>9.4f}  {low:.3f}-{high:.3f} "
                      f"{r['fit_seconds']:>8.1f}  {chosen}", flush=True)


if __name__ == "__main__":
    main()
