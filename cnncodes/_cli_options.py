"""The command line's options, each defined once (as pip's cmdoptions and huggingface_hub's CLI
helpers do): one flag, one meaning, one help text, shared by every command that takes it."""
from .extract import options


def json_output(p, what="machine-readable output (JSON)"):
    p.add_argument("--json", action="store_true", help=what)


def device(p):
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")


def weights(p):
    """One meaning everywhere: the weights the network is built with. extract takes any of them;
    the other commands rebuild a cache's or model's network and need the FILE only when its codes
    came from one (the fingerprint names pretrained and random weights itself)."""
    p.add_argument("--weights", default=None,
                   help="the network's weights: pretrained (default), random[:SEED] (tests and timing only) or a "
                        "state-dict FILE; for a cache or model whose codes came from a FILE, that file")


def progress(p):
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _layers(text):
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _backbone_help():
    """Backbones and their layers, from the registry (adding a spec shows up here)."""
    from .extract.backbones import BACKBONES
    return BACKBONES, "; ".join(f"{name}: {', '.join(spec.layers)} (default {','.join(spec.defaults)})"
                                for name, spec in BACKBONES.items())


def extract(p):
    backbones, layers = _backbone_help()
    p.add_argument("data", help="image folder: root/<class>/<image> or root/{train,val,test}/<class>/<image>")
    p.add_argument("--cache", required=True, help="HDF5 cache file to create or extend (e.g. codes.h5)")
    p.add_argument("--backbone", default=None,
                   help=f"default: the cache's own, or {options.DEFAULT_BACKBONE} for a new cache. "
                   + "; ".join(f"{name}: {spec.description}" for name, spec in backbones.items())
                   + "; any torchvision classification model (resnet50, resnet50.IMAGENET1K_V1, convnext_tiny, "
                     "vit_b_16, ...), timm:NAME.TAG (timm:vit_small_patch14_dinov2.lvd142m) and "
                     "open_clip:ARCH/TAG (open_clip:ViT-B-32/openai): `backbones` lists them")
    p.add_argument("--layer", dest="layers", type=_layers, default=None,
                   help=f"code layer(s), comma-separated ({layers}; default: the cache's own, or the backbone's)")
    weights(p)
    p.add_argument("--dtype", default=None, choices=options.DTYPES,
                   help=f"stored code type (default: the cache's own, or {options.DTYPES[0]})")
    device(p)
    p.add_argument("--precision", default=None, choices=options.PRECISIONS,
                   help="compute precision: auto = fp16 autocast on CUDA; on the CPU bf16 where it computes bf16 in "
                        "hardware, else fp32; int8 (CPU, vgg16) is calibrated on --calibration-images of your images")
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
                   help="network input size (default: the cache's own, or the weights' own, 224); resize scales "
                        "with it")
    p.add_argument("--jpeg-draft", action="store_true", default=None,
                   help="decode large JPEGs at a reduced scale (never below the resize size): much faster "
                        "for photos far larger than the input; codes differ slightly, so the cache records it")
    p.add_argument("--decoder", default=None, choices=options.DECODERS,
                   help="pil (default); torchvision: JPEGs decoded by torchvision.io (libjpeg-turbo) and resized "
                        "as tensors in the workers; gpu: JPEGs decoded in batches (nvJPEG) and resized on the CUDA "
                        "device, each image it refuses (another format, a damaged file) decoded on the CPU")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network: a one-off compile (tens of seconds), for long GPU runs")
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed of the content-key splits (no split folders; default: the cache's own, or 0)")
    p.add_argument("--views", type=int, default=None, metavar="K",
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
    progress(p)


def classify(p, layer_default="every layer the cache holds", default=None):
    from .classify.heads.scaling import SCALINGS
    p.add_argument("--layer", default=default,
                   help=f"code layer(s), comma-separated, used side by side (default: {layer_default})")
    p.add_argument("--scaling", default=None, choices=SCALINGS,
                   help="feature scaling before the classifier (default: standard)")
    p.add_argument("--seed", type=int, default=0, help="seed for the selection slice and the torch heads")
    p.add_argument("--with", dest="with_caches", action="append", default=[], metavar="CACHE",
                   help="another cache of the same photos (e.g. another backbone's): its codes (every layer) go "
                        "side by side with this one's, rows joined by path; repeatable; predict encodes with both")
    json_output(p, "print JSON instead of a table")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="codes held at most (e.g. 1G; default a quarter of this machine's memory): beyond it, "
                        "a seeded random subsample of rows that fits is used, and the output says so")
    p.add_argument("--exclude", default=None, metavar="FILE",
                   help="rows to leave out of training and selection: an audit's audit.json or a list of paths")
    p.add_argument("--exclude-reported", action="store_true",
                   help="with --exclude: drop those rows from the reported split too (not done unless asked)")


def build_parser(prog, description):
    """The whole command line: one sub-parser per verb (cnncodes/cli.py runs them)."""
    import argparse

    from . import __version__
    from .classify.registry import CLASSIFIERS as classifiers
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"cnncodes {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("extract", help="run every image through the backbone once, into an HDF5 cache")
    extract(p)
    json_output(p, "the run's summary as one JSON object (what ExtractSummary.to_dict() gives)")
    p = sub.add_parser("backbones", help="the networks extract can use: family, layers, width, input size, "
                                         "cost, ImageNet top-1 and whether the weights are here (no network)")
    p.add_argument("pattern", nargs="?", default=None,
                   help="shell pattern over names, e.g. 'resnet*', 'timm:*dinov2*', 'open_clip:ViT-B-32/*'")
    p.add_argument("--nodes", action="store_true", help="every layer name one backbone (the pattern) accepts")
    p.add_argument("--widths", action="store_true", help="probe every listed row's width (slower for long lists)")
    json_output(p)
    p = sub.add_parser("rank", help="which backbone for these photos: each candidate measured on one sample of "
                                    "them (linear probe with its interval, LogME, k-NN, images/s, size)")
    p.add_argument("data", help="labelled photos: class folders, a manifest, tar shards")
    p.add_argument("--backbones", default=None, metavar="A,B,...",
                   help="candidates: zoo names, or NAME=WEIGHTS (random, random:SEED, a file); default: every "
                        "network whose weights this machine already holds")
    p.add_argument("--sample", type=int, default=600,
                   help="photos measured, stratified by class and chosen by content key (default 600)")
    p.add_argument("--caches", default="rank_caches",
                   help="folder for each candidate's cache (the sample's codes), rank.json and rank.png")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and the probe's folds")
    p.add_argument("--crop-size", type=int, default=None, help="input size for every candidate (default: each "
                                                                "one's own)")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default 256 on CUDA, 32 on CPU)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: depends on device)")
    device(p)
    json_output(p, "the ranking as JSON")
    progress(p)

    p = sub.add_parser("similar", help="the photos of a cache most like a query (a path in it, or an image "
                                       "file), by cosine over the codes, exactly")
    p.add_argument("cache")
    p.add_argument("queries", nargs="*", metavar="QUERY", help="paths the cache holds, or image files")
    p.add_argument("--text", action="append", default=[], metavar="PHRASE",
                   help="a text query (repeatable), for a cache of an open_clip embedding layer")
    p.add_argument("-k", type=int, default=12, help="neighbours per query (default 12)")
    p.add_argument("--layer", default="first", help="layer(s) to compare, comma-separated (default: first, the "
                   "cache's first layer)")
    p.add_argument("--sheet", default=None, metavar="FILE.png", help="also a picture sheet: each query and its "
                                                                       "neighbours")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="codes read at a time stay within this (default: a quarter of RAM)")
    weights(p)
    device(p)
    p.add_argument("--exact", action="store_true", help="read every row, even where the cache has an index")
    p.add_argument("--check-recall", type=int, default=0, metavar="N",
                   help="also measure the index's recall@k against the exact search on N sampled rows")
    json_output(p, "one JSON object: {cache, layer, k, search, queries: [{query, source, layer, neighbours: [{row, "
                   "path, label, split, score}]}], recall (with --check-recall)}")

    p = sub.add_parser("index", help="a faiss index of a cache's codes beside it (CACHE.faiss/), for similar and "
                                     "audit; again: adds only the new rows")
    p.add_argument("cache")
    p.add_argument("--layer", default="first", help="the layer indexed (default: first, the cache's first layer)")
    p.add_argument("--kind", default=None, choices=("flat", "hnsw", "ivf", "ivfpq"),
                   help="the index's kind (default: by size: flat up to 20,000 rows, hnsw up to 200,000, ivf while "
                        "float32 vectors fit 1 GiB, else ivfpq)")
    p.add_argument("--rebuild", action="store_true", help="build from scratch instead of adding the new rows")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="codes read at a time stay within this (default: a quarter of RAM)")
    json_output(p, "one JSON object: {cache, layer, kind, rows, indexed, added, gone, rebuilt, seconds, folder}")

    p = sub.add_parser("select", help="the unlabelled photos to label next, as a manifest extract reads; "
                                      "--simulate: every strategy against random on a labelled cache")
    p.add_argument("cache")
    p.add_argument("--budget", type=int, required=True, help="photos to pick (per round with --simulate)")
    p.add_argument("--out", default=None, metavar="FILE.csv",
                   help="the manifest to write (path, empty label), in the source's folder")
    p.add_argument("--strategy", default=None,
                   help="auto (default: typicality while the labelled photos are fewer than the budget, then "
                        "uncertainty), uncertainty, diversity, typicality, margin+diversity or random; "
                        "--simulate: a comma-separated list (default all)")
    p.add_argument("--layer", default=None, help="layer(s) to use (default: every layer the cache holds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--simulate", action="store_true",
                   help="on a labelled cache: hide the train labels and run every strategy and random")
    p.add_argument("--rounds", type=int, default=5, help="--simulate: rounds of --budget picks (default 5)")
    p.add_argument("--seeds", type=int, default=5, help="--simulate: seeds, for the intervals (default 5)")
    p.add_argument("--start-per-class", type=int, default=2, help="--simulate: labels per class to start from")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="--simulate: the learning curves")
    json_output(p)

    p = sub.add_parser("info", help="rows, classes, splits, fingerprint and failures of a cache")
    p.add_argument("cache")
    json_output(p, "one JSON object")

    p = sub.add_parser("verify", help="check a cache's structure, counts and stored bytes (exit 1 when not ok)")
    p.add_argument("cache")
    p.add_argument("--images", action="store_true", help="also re-hash the images still present; list changed and missing")
    p.add_argument("--recompute", type=int, default=0, metavar="N",
                   help="re-extract N random rows and report the worst cosine to the stored codes")
    p.add_argument("--min-cosine", type=float, default=options.RECOMPUTE_MIN_COSINE,
                   help=f"--recompute: below this is a problem (default {options.RECOMPUTE_MIN_COSINE})")
    p.add_argument("--data", default=None, help="the image folder (default: the cache's data_root)")
    weights(p)
    device(p)
    json_output(p)

    p = sub.add_parser("export", help="codes and metadata as Parquet, or codes.npy + metadata.parquet")
    p.add_argument("cache")
    p.add_argument("--out", required=True, help="FILE.parquet, or a folder with --format npy")
    from .cache.export import FORMATS
    p.add_argument("--format", default=FORMATS[0], choices=FORMATS)
    p.add_argument("--layer", default=None, help="code layer (default: the cache's first)")

    p = sub.add_parser("pack", help="one self-contained HDF5 file (no .shards folder) to move or share the cache")
    p.add_argument("cache")
    p.add_argument("--out", required=True, help="the packed file to write (e.g. codes-packed.h5)")

    p = sub.add_parser("fit", help="train one classifier on cached codes (hyper-parameters swept)")
    p.add_argument("cache")
    p.add_argument("--classifier", default="logreg", choices=list(classifiers),
                   help="; ".join(f"{name}: {spec.description}" for name, spec in classifiers.items()))
    p.add_argument("--model", default=None, help="write the fitted model here (.npz)")
    classify(p)

    p = sub.add_parser("compare", help="every classifier on identical splits: table, report files, plots")
    p.add_argument("cache")
    p.add_argument("--report", default=None,
                   help="folder for report.md, report.html, report.json and plots (default: none written)")
    p.add_argument("--classifiers", default=None, help=f"comma-separated subset of {', '.join(classifiers)} "
                   "(default: all)")
    classify(p)

    p = sub.add_parser("audit", help="what is wrong with the data, from the codes: duplicates, leaks across "
                                     "splits, likely label errors, outliers")
    p.add_argument("cache")
    p.add_argument("--report", default=None,
                   help="folder for audit.md, audit.json and picture sheets (default: none written; the summary "
                        "is printed)")
    p.add_argument("--threshold", type=float, default=None,
                   help="cosine at or above which two photos are near duplicates (default: calibrated per backbone)")
    p.add_argument("--k", type=int, default=5, help="neighbours for the outlier score (default 5)")
    p.add_argument("--limit", type=int, default=50, help="label errors and outliers listed (default 50)")
    p.add_argument("--top", type=int, dest="limit", help=argparse.SUPPRESS)  # --limit's former name, still read
    p.add_argument("--search", choices=("auto", "exact", "cells", "index"), default="auto",
                   help="how near pairs are found: auto (every pair exactly up to 100,000 photos, beyond within "
                        "k-means cells), exact, cells, or index (beyond 100,000 photos each photo's nearest from "
                        "the cache's faiss index, `cnncodes index`; slower than the cells on 2 cores)")
    classify(p, "first: the cache's first layer, what the threshold is calibrated on", default="first")

    p = sub.add_parser("predict", help="classify image files or folders with a saved model")
    p.add_argument("model")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=int, default=3)
    weights(p)
    device(p)
    p.add_argument("--tta", action="store_true",
                   help="test-time views: average the probabilities of each image and its mirror image "
                        "(two forward passes per image)")
    p.add_argument("--csv", action="store_true", help="CSV output")
    json_output(p, "one JSON object: {predictions: [{path, label, probability, top_k}], failures: [{path, reason}]}")
    p.add_argument("--precision", default="auto", choices=[name for name in options.PRECISIONS if name != "int8"],
                   help="the codes' compute precision (auto: the device's; fp32 gives what an exported graph gives)")
    p.add_argument("--runtime", choices=options.RUNTIMES, default=None,
                   help="torch (a .npz model) or onnxruntime (a .onnx model from export-model; no torch needed); "
                        "default: by the model file's extension")

    p = sub.add_parser("export-model", help="a fitted model as one ONNX file: image -> class probabilities")
    p.add_argument("model", help="a model file from fit --model")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    weights(p)

    p = sub.add_parser("serve", help="an HTTP service for an exported model: POST /predict, POST /similar (with "
                                     "--similar CACHE), GET /health")
    p.add_argument("model", help="a .onnx file from export-model")
    p.add_argument("--similar", default=None, metavar="CACHE",
                   help="also POST /similar: the k rows of this cache (of the model's backbone, weights and layer) "
                        "nearest the uploaded image, through its faiss index when it has one")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="--similar without an index: codes read at a time stay within this (default: a quarter of RAM)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-batch", type=int, default=32, help="requests run together at most (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long the first waiting request waits for others to join its batch (default 5)")
    p.add_argument("--max-bytes", type=int, default=20 * 2**20, help="largest upload accepted (default 20 MiB)")

    p = sub.add_parser("demo", help="the whole flow offline on 200 real flower photos: extract, compare")
    p.add_argument("--data", default=None, help="run on this image folder instead of the shipped photos")
    p.add_argument("--synthetic", action="store_true", help="drawn flower-like images instead of the photos")
    p.add_argument("--out", default="demo_out", help="folder for images, cache and report")
    p.add_argument("--per-class", type=int, default=60, help="--synthetic: drawn images per class")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--classifiers", default=None, help="comma-separated subset (default: all)")
    progress(p)
    return parser
