#!/usr/bin/env python
"""cnncodes command line: extract CNN codes once, then fit, compare and predict on them.

Argument parsing and printing only; the work lives in extract/, cache/ and classify/.
"""
import argparse
import json
import sys


def _layers(text):
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_extract_args(p):
    p.add_argument("data", help="image folder: root/<class>/<image> or root/{train,val,test}/<class>/<image>")
    p.add_argument("--cache", required=True, help="HDF5 cache file to create or extend (e.g. codes.h5)")
    p.add_argument("--backbone", default="vgg16", help="vgg16 (default) or efficientnet_lite0")
    p.add_argument("--layer", type=_layers, default=(), help="code layer(s), comma-separated "
                   "(vgg16: fc7 default, fc6, pool5; efficientnet_lite0: avgpool)")
    p.add_argument("--weights", default=None,
                   help="pretrained (default), random[:SEED] (tests and timing only) or a state-dict FILE")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="stored code type")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="compute precision: auto = fp16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default 256 on CUDA, 32 on CPU)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: depends on device)")
    p.add_argument("--crop-size", type=int, default=None,
                   help="network input size (default: the weights' own, 224); resize scales with it")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the content-key splits (no split folders)")
    p.add_argument("--shard-rows", type=int, default=512,
                   help="images per committed shard: the most a crash can lose (default 512)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_extract(args):
    from extract import ExtractConfig, run_extract
    config = ExtractConfig(
        data_root=args.data, cache_path=args.cache, backbone=args.backbone, layers=args.layer,
        weights=args.weights, dtype=args.dtype, device=args.device, precision=args.precision,
        batch_size=args.batch_size, workers=args.workers, crop_size=args.crop_size,
        split_seed=args.split_seed, shard_rows=args.shard_rows, progress=not args.no_progress)
    summary = run_extract(config)
    for path, reason in summary.failures[:20]:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    if len(summary.failures) > 20:
        print(f"... and {len(summary.failures) - 20} more (see `pipeline.py info {args.cache}`)", file=sys.stderr)
    print(summary.line())
    return 130 if summary.interrupted else 0


def cmd_info(args):
    from cache import open_cache
    with open_cache(args.cache) as c:
        info = c.summary()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    fp = info["fingerprint"]
    print(f"{info['path']}: {info['rows']} rows, {info['size_bytes'] / 1e6:.1f} MB "
          f"({info['size_bytes'] / max(1, info['rows']) / 1e3:.1f} kB per row)")
    print("layers:  " + ", ".join(f"{k} ({v}-d)" for k, v in info["layers"].items()) + f", stored as {fp.get('dtype')}")
    print("classes: " + ", ".join(f"{k} {v}" for k, v in info["classes"].items()))
    print("splits:  " + ", ".join(f"{k} {v}" for k, v in info["splits"].items()))
    for key in ("backbone", "weights", "preprocess", "precision", "torch_version", "torchvision_version",
                "data_root", "schema_version"):
        value = json.dumps(fp[key]) if isinstance(fp.get(key), dict) else fp.get(key)
        print(f"{key + ':':<21}{value}")
    print(f"failed:  {info['failed']}")
    for item in info["failures"][:20]:
        print(f"  {item['path']}: {item['reason']}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="pipeline.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("extract", help="run every image through the backbone once, into an HDF5 cache")
    add_extract_args(p)
    p.set_defaults(func=cmd_extract)
    p = sub.add_parser("info", help="rows, classes, splits, fingerprint and failures of a cache")
    p.add_argument("cache")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from cache import CacheError
    from extract import ExtractError
    try:
        return args.func(args)
    except (CacheError, ExtractError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
