#!/usr/bin/env python
"""The network's own top trained on cached maps against the heads on codes, on identical splits.

Each cache holds codes and a map layer of the same photos (one extract run:
`--layer avgpool,stage6,stage7_map`), so every classifier sees the same rows, the same selection
slice and the same reported split. Prints one row per classifier: reported accuracy (95% CI),
fit seconds, McNemar's exact test against the best of all (codes and maps together, the same
reported rows) and the chosen parameters.

    python bench/top_bench.py k0.h5 k2.h5 --codes avgpool+stage6 --maps stage7_map
"""
import argparse
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from cnncodes.cache import open_cache  # noqa: E402
from cnncodes.classify import ClassifyError, fit_and_evaluate, read_codes  # noqa: E402
from cnncodes.classify.evaluate import _against_the_best  # noqa: E402
from cnncodes.classify.registry import classifiers_for  # noqa: E402


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
        print(f"{'layer':<16}{'classifier':<10}{'accuracy':>9}  {'95% CI':<12}{'fit s':>8}  {'vs best':<10}chosen")
        results = []
        for layer, heads in ((args.codes, args.code_heads), (args.maps, args.map_heads)):
            data, fitted = read_codes(cache, layer), {}  # compare's loop: the ensemble reuses its members
            for name in heads.split(",") if heads else classifiers_for(data.layer, data.fingerprint):
                try:
                    fitted[name] = fit_and_evaluate(data, name, fitted=fitted, keep_rows=True)
                    results.append(fitted[name][0])
                except ClassifyError as error:
                    print(f"{data.layer:<16}{name:<10} skipped: {error}")
        _against_the_best(results)
        for r in results:
            low, high = r["accuracy_ci95"]
            versus = "best" if r["p_vs_best"] is None else f"p={r['p_vs_best']:.3f}"
            chosen = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
            print(f"{r['layer']:<16}{r['classifier']:<10}{r['accuracy']:>9.4f}  {low:.3f}-{high:.3f} "
                  f"{r['fit_seconds']:>8.1f}  {versus:<10}{chosen}", flush=True)

if __name__ == "__main__":
    main()
