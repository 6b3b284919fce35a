#!/usr/bin/env python
"""cnncodes command line: extract CNN codes once, then fit, compare and predict on them.

Argument parsing and printing only; the work lives in extract/, cache/ and classify/.
"""
import argparse
import functools
import json
import os
import signal
import sys


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: commit what is complete, then exit 143."""


def _terminate(signum, frame):
    raise Terminated()


def _layers(text):
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _backbone_help():
    """Backbones and their layers, from the registry (adding a spec shows up here)."""
    from .extract.backbones import BACKBONES
    return BACKBONES, "; ".join(f"{name}: {', '.join(spec.layers)} (default {','.join(spec.defaults)})"
                                for name, spec in BACKBONES.items())


def add_extract_args(p):
    from .extract import options
    backbones, layers = _backbone_help()
    p.add_argument("data", help="image folder: root/<class>/<image> or root/{train,val,test}/<class>/<image>")
    p.add_argument("--cache", required=True, help="HDF5 cache file to create or extend (e.g. codes.h5)")
    p.add_argument("--backbone", default=options.DEFAULT_BACKBONE,
                   help="; ".join(f"{name}: {spec.description}" for name, spec in backbones.items())
                   + "; any torchvision classification model (resnet50, resnet50.IMAGENET1K_V1, convnext_tiny, "
                     "vit_b_16, ...), timm:NAME.TAG (timm:vit_small_patch14_dinov2.lvd142m) and "
                     "open_clip:ARCH/TAG (open_clip:ViT-B-32/openai): `backbones` lists them")
    p.add_argument("--layer", dest="layers", type=_layers, default=(),
                   help=f"code layer(s), comma-separated ({layers})")
    p.add_argument("--weights", default=None,
                   help="pretrained (default), random[:SEED] (tests and timing only) or a state-dict FILE")
    p.add_argument("--dtype", default=options.DTYPES[0], choices=options.DTYPES, help="stored code type")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--precision", default="auto", choices=options.PRECISIONS,
                   help="compute precision: auto = fp16 autocast on CUDA, fp32 on CPU; int8 (CPU, vgg16): "
                        "~1.9x fp32 on AVX2, calibrated on --calibration-images of your images")
    p.add_argument("--runtime", default=None, choices=options.RUNTIMES,
                   help="what runs the network: torch (default) or onnxruntime (CPU, fp32; the network exported "
                        "once to ONNX; recorded as precision onnxruntime-fp32)")
    p.add_argument("--calibration-images", type=int, default=None,
                   help="int8 only: images whose activations set the int8 ranges "
                        f"(default {options.DEFAULT_CALIBRATION_IMAGES}; first run only)")
    p.add_argument("--int8-engine", default=None, choices=options.INT8_ENGINES,
                   help="int8 only: kernel library, x86 (default: fbgemm, codes closer to fp32) or onednn "
                        "(~20%% faster on AVX2 CPUs, codes a little further); first run only, recorded in the cache")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default 256 on CUDA, 32 on CPU)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: depends on device)")
    p.add_argument("--crop-size", type=int, default=None,
                   help="network input size (default: the weights' own, 224); resize scales with it")
    p.add_argument("--jpeg-draft", action="store_true",
                   help="decode large JPEGs at a reduced scale (never below the resize size): much faster "
                        "for photos far larger than the input; codes differ slightly, so the cache records it")
    p.add_argument("--decoder", default=options.DECODERS[0], choices=options.DECODERS,
                   help="pil (default) or torchvision: JPEGs decoded by torchvision.io and resized as tensors; "
                        "on CUDA decoded (nvJPEG) and resized on the GPU, freeing the CPU cores")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network: a one-off compile (tens of seconds), for long GPU runs; "
                        "measured no faster than eager on a 2-core CPU")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the content-key splits (no split folders)")
    p.add_argument("--views", type=int, default=0, metavar="K",
                   help="also cache K augmented views of each train image (seeded random resized crops, odd "
                        "views mirrored), as extra rows; fit and compare train on them (default 0)")
    p.add_argument("--shard-rows", type=int, default=options.DEFAULT_SHARD_ROWS,
                   help=f"images per committed shard: the most a crash can lose (default {options.DEFAULT_SHARD_ROWS})")
    p.add_argument("--rehash", action="store_true",
                   help="read and hash every file, not only new ones and those whose size or mtime changed")
    p.add_argument("--prune", action="store_true",
                   help="drop cached rows whose file is no longer under DATA (without it they are only counted)")
    p.add_argument("--engine", default=options.ENGINE_NAMES[0], choices=options.ENGINE_NAMES,
                   help="local (default): this process; ray: spread over a Ray cluster (pip install -e '.[ray]'; "
                        "the images must be at the same path on every node)")
    p.add_argument("--ray-address", default=None,
                   help="--engine ray: join a running cluster (auto, or HOST:PORT); default: start a local Ray")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def cmd_extract(args):
    from .extract import ExtractConfig, run_extract
    from .extract.config import CodeSpec, RunOptions
    config = ExtractConfig(args.data, args.cache, codes=CodeSpec.from_args(args), run=RunOptions.from_args(args))
    summary = run_extract(config)
    for path, reason in summary.failures[:20]:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    if len(summary.failures) > 20:
        print(f"... and {len(summary.failures) - 20} more (see `pipeline.py info {args.cache}`)", file=sys.stderr)
    print(summary.line())
    if summary.interrupted:
        return 143 if isinstance(summary.interrupted, Terminated) else 130
    return 0


def cmd_backbones(args):
    from .extract.backbones import get_backbone
    from .extract.backbones.listing import format_rows, list_backbones
    if args.nodes:
        spec = get_backbone(args.pattern or "vgg16")
        print(f"{spec.name}: named layers {', '.join(spec.layers)} (default {','.join(spec.defaults)})")
        others = spec.other_layers()
        print(f"{len(others)} more: " + " ".join(others) if others else "no other layers")
        return 0
    rows, notes = list_backbones(args.pattern, probe=True if args.widths else None)
    if args.json:
        print(json.dumps({"backbones": rows, "notes": notes}, indent=2))
        return 0
    if rows:
        print("\n".join(format_rows(rows)))
    for note in notes:
        print(note)
    if not rows and args.pattern:
        print(f"no backbone matches {args.pattern!r} (a pattern is matched whole: try '*{args.pattern}*')")
    return 0


def cmd_info(args):
    from .cache import open_cache
    from .cache.fingerprint import describe_value
    with open_cache(args.cache) as c:
        info = c.summary()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    fp = info["fingerprint"]
    print(f"{info['path']}: {info['rows']} rows, {info['size_bytes'] / 1e6:.1f} MB "
          f"({info['size_bytes'] / max(1, info['rows']) / 1e3:.1f} kB per row)")
    maps = fp.get("map_shapes") or {}
    print("layers:  " + ", ".join(f"{k} ({v}-d" + (f", a {'x'.join(map(str, maps[k]))} map)" if k in maps else ")")
                                  for k, v in info["layers"].items()) + f", stored as {fp.get('dtype')}")
    print("classes: " + ", ".join(f"{k} {v}" for k, v in info["classes"].items()))
    print("splits:  " + ", ".join(f"{k} {v}" for k, v in info["splits"].items()))
    for key in ("backbone", "weights", "preprocess", "precision", "torch_version", "torchvision_version",
                "backbone_library", "data_root", "schema_version"):
        if key == "backbone_library" and key not in fp:
            continue  # caches made before the zoo did not record it
        value = json.dumps(fp[key]) if isinstance(fp.get(key), dict) else fp.get(key)
        print(f"{key + ':':<21}{value}")
    if fp.get("quantization"):
        print(f"{'quantization:':<21}{describe_value(fp['quantization'])}")
    if fp.get("views"):
        print(f"{'views:':<21}{info['images']} images + {info['view_rows']} view rows: "
              f"{describe_value(fp['views'])}")
    if info.get("vanished"):
        print(f"vanished: {info['vanished']} rows had no file under data_root at the last extract "
              "(`extract --prune` drops them)")
    print(f"failed:  {info['failed']}")
    for item in info["failures"][:20]:
        print(f"  {item['path']}: {item['reason']}")
    print(f"{'to copy:':<21}{info['how_to_copy']}")
    return 0


def cmd_verify(args):
    from .cache.verify import verify_cache
    recompute = None
    if args.recompute:
        from .extract.encode_new import recompute_rows
        recompute = functools.partial(recompute_rows, args.cache, args.recompute, data_root=args.data,
                                      weights_file=args.weights, device=args.device)
    from .extract.sources import source_hasher
    report = verify_cache(args.cache, images=args.images, data_root=args.data, recompute=recompute,
                          min_cosine=args.min_cosine, source_hasher=source_hasher)
    if args.json:
        print(json.dumps(report.__dict__ | {"ok": report.ok}, indent=2))
        return 0 if report.ok else 1
    print(f"{report.path}: {report.rows} rows in {report.segments} segments, {report.chunks_checked} code chunks "
          "read and checksummed")
    if report.retired:
        print(f"retired: {len(report.retired)} segment file(s) no longer used, kept while a reader may hold an older "
              "version of the cache; the next extract removes them once no reader does")
    if args.images:
        print(f"images: {report.images_checked} re-hashed, {len(report.changed)} changed, {len(report.missing)} missing")
        for path in (report.changed[:20]):
            print(f"  changed: {path}")
        for path in (report.missing[:20]):
            print(f"  missing: {path}")
    if report.worst_cosine is not None:
        print(f"recomputed {report.recomputed} rows: worst cosine to the stored codes {report.worst_cosine:.6f}")
    for problem in report.problems:
        print(f"problem: {problem}")
    print("ok" if report.ok else f"NOT OK: {len(report.problems)} problems, {len(report.changed)} changed and "
          f"{len(report.missing)} missing images")
    return 0 if report.ok else 1


def cmd_export(args):
    from .cache.export import export_cache
    done = export_cache(args.cache, args.out, args.format, args.layer)
    print(f"exported {done['rows']} rows of {done['layer']} ({done['width']}-d) to {', '.join(done['files'])}")
    return 0


def cmd_pack(args):
    from .cache.pack import pack_cache
    done = pack_cache(args.cache, args.out)
    print(f"packed {done['rows']} rows into {args.out} ({done['bytes'] / 1e6:.1f} MB, one self-contained file)")
    return 0


def _classify_args(p):
    from .classify.scaling import SCALINGS
    p.add_argument("--layer", default=None,
                   help="code layer(s), comma-separated, used side by side (default: every layer the cache holds)")
    p.add_argument("--scaling", default=None, choices=SCALINGS,
                   help="feature scaling before the classifier (default: standard)")
    p.add_argument("--seed", type=int, default=0, help="seed for the selection slice and the torch heads")
    p.add_argument("--with", dest="with_caches", action="append", default=[], metavar="CACHE",
                   help="another cache of the same photos (e.g. another backbone's): its codes (every layer) go "
                        "side by side with this one's, rows joined by path; repeatable; predict encodes with both")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="codes held at most (e.g. 1G; default a quarter of this machine's memory): beyond it, "
                        "a seeded random subsample of rows that fits is used, and the output says so")
    p.add_argument("--exclude", default=None, metavar="FILE",
                   help="rows to leave out of training and selection: an audit's audit.json or a list of paths")
    p.add_argument("--exclude-reported", action="store_true",
                   help="with --exclude: drop those rows from the reported split too (not done unless asked)")


def _result_line(r):
    if "skipped" in r:
        return f"{r['classifier']}: skipped: {r['skipped']}"
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
    sample = (f" ({r['memory']})" if r.get("memory", "all rows in memory") != "all rows in memory" else "")
    low, high = r.get("accuracy_ci95") or (0.0, 1.0)
    return (f"{r['classifier']}{sample}: {r['eval_split']} accuracy {r['accuracy']:.4f} "
            f"(95% CI {low:.3f}-{high:.3f}, {r['n_eval']} rows), "
            f"balanced {r['balanced_accuracy']:.4f}, "
            f"macro F1 {r['macro_f1']:.4f}, fit {r['fit_seconds']:.2f} s; chosen on {r['selection']}"
            + (f": {params}" if params else ""))


def _load_codes(args, layer=None):
    """The cache's codes as the library loads them (cnncodes.load_codes); its notes on stderr."""
    from ._api import load_codes
    data = load_codes(args.cache, layer or args.layer, max_memory=args.max_memory, seed=args.seed,
                      with_caches=getattr(args, "with_caches", None), exclude=getattr(args, "exclude", None),
                      exclude_reported=getattr(args, "exclude_reported", False))
    _print_notes(data.notes)
    return data


def _print_notes(notes):
    """The library's notes on stderr, in the command line's words (flags, not parameters)."""
    for note in notes:
        print(note.replace("note: exclude ", "note: --exclude ").replace("exclude_reported", "--exclude-reported"),
              file=sys.stderr)


def cmd_fit(args):
    from ._api import fit
    model = fit(_load_codes(args), args.classifier, scaling=args.scaling, seed=args.seed)
    result = model.result
    if args.model:
        model.save(args.model)
        result["model"] = args.model
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_result_line(result))
        if args.model:
            print(f"model written to {args.model}")
    return 0


def cmd_compare(args):
    return _compare(_load_codes(args), args.report, args.classifiers, args.scaling, args.seed, args.json)


def _compare(data, report, classifiers=None, scaling=None, seed=0, as_json=False):
    from ._api import compare
    from .classify.report import TABLE_NOTE
    progress = None if as_json else (lambda result: print(_result_line(result), file=sys.stderr))
    results = compare(data, classifiers, scaling=scaling, seed=seed, on_result=progress)
    paths = results.write_report(report)
    if as_json:
        print(json.dumps(list(results), indent=2))
        return 0
    best = results.best
    print(f"\nreported split: {best['eval_split']} ({best['n_eval']} rows)")
    print(results.table())
    print(TABLE_NOTE)
    print(f"report: {paths['report.md']} (also report.json, confusion.png, accuracy.png)")
    return 0


def cmd_audit(args):
    from ._api import audit
    from .classify.audit_report import summary_lines
    found = audit(args.cache, layer=args.layer, threshold=args.threshold, k=args.k, top=args.top, seed=args.seed,
                  report=args.report, max_memory=args.max_memory, exclude=getattr(args, "exclude", None),
                  exclude_reported=getattr(args, "exclude_reported", False))
    _print_notes(found.pop("notes"))
    paths = found.pop("report", None)
    if args.json:
        print(json.dumps(found, indent=2, default=str))
        return 0
    for line in summary_lines(found):
        print(line)
    if paths:
        print(f"report: {paths['audit.md']} (also audit.json: its \"exclude\" list feeds fit/compare --exclude)")
    return 0


def cmd_predict(args):
    from ._api import predict
    predictions, failures = predict(args.model, args.images, top_k=args.top_k, runtime=args.runtime,
                                    weights=args.weights, device=args.device, tta=args.tta, precision=args.precision)
    for path, reason in failures:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps(predictions, indent=2))
    elif args.csv:
        import csv
        writer = csv.writer(sys.stdout)
        writer.writerow(["path"] + [f"{c}{i + 1}" for i in range(args.top_k) for c in ("label", "probability")])
        for p in predictions:
            writer.writerow([p["path"]] + [x for t in p["top_k"] for x in (t["label"], f"{t['probability']:.4f}")])
    else:
        width = max([len(p["path"]) for p in predictions] + [4])
        for p in predictions:
            tops = "  ".join(f"{t['label']} {t['probability']:.3f}" for t in p["top_k"])
            print(f"{p['path']:<{width}}  {tops}")
    return 1 if failures and not predictions else 0


def cmd_export_model(args):
    from .classify.onnx_export import export_onnx
    done = export_onnx(args.model, args.out, weights_file=args.weights)
    print(f"wrote {done['path']}: {done['bytes'] / 1e6:.1f} MB, {done['backbone']} {done['layer']} -> "
          f"{done['classes']} classes, input uint8 [batch, 3, {done['crop']}, {done['crop']}]")
    return 0


def cmd_serve(args):
    from .classify.serve import serve
    serve(args.model, host=args.host, port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
          max_bytes=args.max_bytes)
    return 0


DEMO_PHOTOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_data", "flowers")


def cmd_demo(args):
    from .extract import ExtractConfig, run_extract
    out = args.out
    data = args.data
    if data is None and args.synthetic:
        from .extract.synthetic import make_synthetic_flowers
        data = make_synthetic_flowers(os.path.join(out, "images"), per_class=args.per_class)
        print(f"generated {args.per_class} drawn images per class in {data}")
    elif data is None:
        data = DEMO_PHOTOS
        print(f"real photos: {data} (200 flower photos, CC-BY 2.0; see ATTRIBUTION.md there)")
    cache = os.path.join(out, "codes.h5")
    summary = run_extract(ExtractConfig(data, cache, backbone=args.backbone, progress=not args.no_progress))
    print(summary.line())
    from .classify import load_codes
    return _compare(load_codes(cache), os.path.join(out, "report"), args.classifiers)


def build_parser(prog="pipeline.py"):
    from .classify.registry import CLASSIFIERS as classifiers
    from .extract import options
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    from . import __version__
    parser.add_argument("--version", action="version", version=f"cnncodes {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("extract", help="run every image through the backbone once, into an HDF5 cache")
    add_extract_args(p)
    p.set_defaults(func=cmd_extract)
    p = sub.add_parser("backbones", help="the networks extract can use: family, layers, width, input size, "
                                         "cost, ImageNet top-1 and whether the weights are here (no network)")
    p.add_argument("pattern", nargs="?", default=None,
                   help="shell pattern over names, e.g. 'resnet*', 'timm:*dinov2*', 'open_clip:ViT-B-32/*'")
    p.add_argument("--nodes", action="store_true", help="every layer name one backbone (the pattern) accepts")
    p.add_argument("--widths", action="store_true", help="probe every listed row's width (slower for long lists)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_backbones)
    p = sub.add_parser("info", help="rows, classes, splits, fingerprint and failures of a cache")
    p.add_argument("cache")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("verify", help="check a cache's structure, counts and stored bytes (exit 1 when not ok)")
    p.add_argument("cache")
    p.add_argument("--images", action="store_true", help="also re-hash the images still present; list changed and missing")
    p.add_argument("--recompute", type=int, default=0, metavar="N",
                   help="re-extract N random rows and report the worst cosine to the stored codes")
    p.add_argument("--min-cosine", type=float, default=options.RECOMPUTE_MIN_COSINE,
                   help=f"--recompute: below this is a problem (default {options.RECOMPUTE_MIN_COSINE})")
    p.add_argument("--data", default=None, help="the image folder (default: the cache's data_root)")
    p.add_argument("--weights", default=None, help="--recompute with codes from --weights FILE: that file")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("export", help="codes and metadata as Parquet, or codes.npy + metadata.parquet")
    p.add_argument("cache")
    p.add_argument("--out", required=True, help="FILE.parquet, or a folder with --format npy")
    from .cache.export import FORMATS
    p.add_argument("--format", default=FORMATS[0], choices=FORMATS)
    p.add_argument("--layer", default=None, help="code layer (default: the cache's first)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("pack", help="one self-contained HDF5 file (no .shards folder) to move or share the cache")
    p.add_argument("cache")
    p.add_argument("--out", required=True, help="the packed file to write (e.g. codes-packed.h5)")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("fit", help="train one classifier on cached codes (hyper-parameters swept)")
    p.add_argument("cache")
    p.add_argument("--classifier", default="logreg", choices=list(classifiers),
                   help="; ".join(f"{name}: {spec.description}" for name, spec in classifiers.items()))
    p.add_argument("--model", default=None, help="write the fitted model here (.npz)")
    _classify_args(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("compare", help="every classifier on identical splits: table, report files, plots")
    p.add_argument("cache")
    p.add_argument("--report", default="report", help="folder for report.md, report.json and plots")
    p.add_argument("--classifiers", default=None, help=f"comma-separated subset of {', '.join(classifiers)} "
                   "(default: all)")
    _classify_args(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("audit", help="what is wrong with the data, from the codes: duplicates, leaks across "
                                     "splits, likely label errors, outliers")
    p.add_argument("cache")
    p.add_argument("--report", default="audit_report", help="folder for audit.md, audit.json and picture sheets")
    p.add_argument("--threshold", type=float, default=None,
                   help="cosine at or above which two photos are near duplicates (default: calibrated per backbone)")
    p.add_argument("--k", type=int, default=5, help="neighbours for the outlier score (default 5)")
    p.add_argument("--top", type=int, default=50, help="label errors and outliers listed (default 50)")
    _classify_args(p)
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("predict", help="classify image files or folders with a saved model")
    p.add_argument("model")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--weights", default=None, help="the weights file, when the model's codes came from --weights FILE")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", action="store_true",
                   help="test-time views: average the probabilities of each image and its mirror image "
                        "(two forward passes per image)")
    p.add_argument("--csv", action="store_true", help="CSV output")
    p.add_argument("--json", action="store_true", help="a JSON list of {path, label, probability, top_k}")
    p.add_argument("--precision", default="auto", choices=[name for name in options.PRECISIONS if name != "int8"],
                   help="the codes' compute precision (auto: the device's; fp32 gives what an exported graph gives)")
    p.add_argument("--runtime", choices=options.RUNTIMES, default=None,
                   help="torch (a .npz model) or onnxruntime (a .onnx model from export-model; no torch needed); "
                        "default: by the model file's extension")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export-model", help="a fitted model as one ONNX file: image -> class probabilities")
    p.add_argument("model", help="a model file from fit --model")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--weights", default=None, help="the weights file, when the model's codes came from --weights FILE")
    p.set_defaults(func=cmd_export_model)

    p = sub.add_parser("serve", help="an HTTP service for an exported model: POST /predict, GET /health")
    p.add_argument("model", help="a .onnx file from export-model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-batch", type=int, default=32, help="requests run together at most (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long the first waiting request waits for others to join its batch (default 5)")
    p.add_argument("--max-bytes", type=int, default=20 * 2**20, help="largest upload accepted (default 20 MiB)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="the whole flow offline on 200 real flower photos: extract, compare")
    p.add_argument("--data", default=None, help="run on this image folder instead of the shipped photos")
    p.add_argument("--synthetic", action="store_true", help="drawn flower-like images instead of the photos")
    p.add_argument("--out", default="demo_out", help="folder for images, cache and report")
    p.add_argument("--per-class", type=int, default=60, help="--synthetic: drawn images per class")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--classifiers", default=None, help="comma-separated subset (default: all)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    prog = os.path.basename(sys.argv[0]) if argv is None else "pipeline.py"
    args = build_parser(prog if prog in ("cnncodes", "pipeline.py") else "pipeline.py").parse_args(argv)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    from .cache.errors import CacheError      # error types live where importing them costs nothing;
    from .classify.errors import ClassifyError  # any other exception is a bug: its traceback shows
    from .extract.errors import ExtractError
    try:
        return args.func(args)
    except (CacheError, ExtractError, ClassifyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("interrupted", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
