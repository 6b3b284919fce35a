"""The workflow in Python: what the command line does, as functions a notebook calls.

The command line (cnncodes/cli.py) parses, calls these, and prints; so `cnncodes audit PATH` and
`cnncodes.audit(PATH)` are one code path. Arguments carry the command line's names (``layer``,
``weights``, ``exclude``, ``with_caches``, ...).
"""
import os

from .classify.budget import default_budget, over_budget_note, parse_size


def list_backbones(pattern=None) -> list:
    """Names extract can use (torchvision, EfficientNet-Lite; timm and open_clip with a pattern),
    as `cnncodes backbones PATTERN` lists them: ``list_backbones("timm:*dinov2*")``."""
    from .extract.backbones.listing import list_backbones as rows_of
    rows, _ = rows_of(pattern, probe=False)
    return [row["name"] for row in rows]


def extract_codes(data, cache, *, layer=None, progress=False, **options):
    """Run every image of ``data`` (a folder, manifest, tar shards, Parquet file or URL prefix)
    through the backbone once, into the HDF5 ``cache``; resumable and incremental, as `extract`.
    options: extract's, by name (backbone, weights, precision, batch_size, workers, views, ...);
    ``layer``: one name, "a,b", or a sequence. Returns the ExtractSummary (.written, .skipped, .failed)."""
    from .extract import ExtractConfig, run_extract
    if layer is not None:
        options["layers"] = tuple(p.strip() for p in layer.split(",")) if isinstance(layer, str) else tuple(layer)
    return run_extract(ExtractConfig(os.fspath(data), os.fspath(cache), progress=progress, **options))


def load_codes(cache, layer=None, *, max_memory=None, seed=0, with_caches=None, exclude=None,
               exclude_reported=False):
    """A cache's codes for stage two (a CodesData: .X .y .splits .class_names .layer .fingerprint).

    layer: one code layer, "a,b" or "a+b" side by side (default: every code layer).
    max_memory: "8G", "512M" or bytes (default: a share of this machine's memory); past it the
    codes stream, or a seeded subsample of ``seed`` is held. with_caches: other caches of the same
    photos whose codes go side by side. exclude: an audit.json (or a list of paths, one per line)
    whose rows leave training and selection, and the reported split too with ``exclude_reported``.
    What the loading decided is in ``.notes`` (the command line prints them)."""
    from .classify import load_codes as load
    budget = (parse_size(max_memory) if isinstance(max_memory, str) else int(max_memory)) if max_memory \
        else default_budget()
    data = load(os.fspath(cache), layer, budget, seed)
    notes = []
    if with_caches:
        from .classify.joined import join_caches
        data = join_caches(data, [os.fspath(c) for c in with_caches])
        notes.append(f"side by side: {data.path} ({data.layer}) + " + " + ".join(
            f"{part['cache']} ({part['layer']}, {part['fingerprint'].backbone})" for part in data.side_by_side)
            + f": {data.X.shape[1]}-d codes")
    if data.stream is not None:
        notes.append(over_budget_note(data, budget))
    if data.unlabeled:
        notes.append(f"note: {data.unlabeled:,} unlabeled rows left out (fit and compare use the labelled ones)")
    if exclude:
        from .classify.data import exclude_rows, read_exclusions
        paths = read_exclusions(os.fspath(exclude))
        data = exclude_rows(data, paths, reported=exclude_reported)
        where = "training, selection and the reported split" if exclude_reported else \
            "training and selection (the reported split keeps them; exclude_reported drops them there too)"
        notes.append(f"note: exclude {exclude}: {data.excluded:,} rows of {len(paths):,} listed paths left out of "
                     f"{where}")
    data.notes = notes
    return data


def _codes(codes, **load_options):
    """A CodesData as given, or loaded from a cache path with ``load_options``."""
    if isinstance(codes, (str, os.PathLike)):
        return load_codes(codes, **load_options)
    if load_options.get("layer") is not None:
        raise TypeError("layer= applies when codes is a cache path; load_codes(path, layer) picks it otherwise")
    return codes


def fit(codes, classifier="logreg", *, scaling=None, seed=0, **load_options):
    """Fit ``classifier`` (a name of `cnncodes fit --classifier`) on the codes (a CodesData, or a
    cache path loaded with ``load_options`` as load_codes takes them); hyper-parameters chosen
    without the reported rows. Returns a Model: .result (accuracy with its interval, params,
    sweep), .predict(X), .predict_images(paths), .save(path), .export_onnx(path)."""
    from .classify import DEFAULT_SCALING, fit_and_evaluate
    from .classify.model_file import model_meta
    from ._model import Model
    data = _codes(codes, seed=seed, **load_options)
    result, pipeline = fit_and_evaluate(data, classifier, scaling or DEFAULT_SCALING, seed)
    return Model(pipeline, model_meta(classifier, result, data), result)


def load_model(path):
    """A Model from a file `fit --model` (or Model.save) wrote."""
    from .classify.model_file import load_model as load
    from ._model import Model
    return Model.from_loaded(load(os.fspath(path)), os.fspath(path))


class Comparison(list):
    """compare's results (a FitResult per classifier, or a Skipped, in order) and the codes they
    were fitted on."""

    def __init__(self, results, data, scaling, seed):
        super().__init__(results)
        self.data, self.scaling, self.seed = data, scaling, seed

    @property
    def best(self):
        from .classify.report import best_result
        return best_result(self)

    def to_json(self) -> list:
        """The results as `compare --json` prints them."""
        return [r.to_dict() for r in self]

    def table(self, markdown=False) -> str:
        from .classify.report import format_table
        return format_table(list(self), markdown)

    def write_report(self, out_dir) -> dict:
        """report.md, report.json and the plots into ``out_dir``; returns {name: path}."""
        from .classify.report import write_report
        data = self.data
        return write_report(os.fspath(out_dir), list(self), data, {
            "cache": " + ".join([data.path] + [part["cache"] for part in data.side_by_side or []]),
            "backbone": data.fingerprint.backbone, "weights": data.fingerprint.weights,
            "layer": data.layer, "scaling": self.scaling, "seed": self.seed})


def compare(codes, classifiers=None, *, scaling=None, seed=0, on_result=None, **load_options):
    """Every classifier (or ``classifiers``: names, or "a,b") on identical splits and seeds.
    Returns a Comparison: the FitResults, .best, .table(), .to_json(), .write_report(dir)."""
    from .classify import DEFAULT_SCALING
    from .classify import compare as compare_all
    data = _codes(codes, seed=seed, **load_options)
    names = classifiers.split(",") if isinstance(classifiers, str) else classifiers
    scaling = scaling or DEFAULT_SCALING
    return Comparison(compare_all(data, names, scaling, seed, on_result=on_result), data, scaling, seed)


def audit(cache, *, layer=None, threshold=None, k=5, limit=50, seed=0, report=None, **load_options):
    """What is wrong with the data, found from the codes: exact and near duplicates, train/eval
    leaks, likely label errors, outliers, and the leaks' effect on the score. The command line's
    defaults by construction: ``layer`` defaults to the cache's first layer (what the threshold is
    calibrated on). limit: likely label errors and outliers listed. report: a folder for audit.md, audit.json and the picture sheets."""
    from .cache import open_cache
    from .classify.audit import audit as find
    from .classify.audit import effect_on_score
    from .classify.errors import ClassifyError
    if layer is None:
        with open_cache(os.fspath(cache)) as c:
            layer = c.first_layer
    data = load_codes(cache, layer, seed=seed, **load_options)
    found = find(data, threshold=threshold, k=k, limit=limit, seed=seed)
    try:
        found["effect_on_score"] = effect_on_score(data, found["leaked"], seed)
    except ClassifyError as exc:  # no split to report on, say: the audit itself still stands
        found["effect_on_score"] = {"skipped": str(exc)}
    found["notes"] = data.notes
    if report is not None:
        from .classify.audit.report import write_audit
        found["report"] = write_audit(os.fspath(report), found, data.fingerprint.provenance.get("data_root"), data)
    return found


def verify(cache, *, images=False, recompute=0, data=None, weights=None, device="auto", min_cosine=None):
    """Check a cache: its structure, counts and every code chunk's checksum; with ``images`` also
    re-hash the photos still present; with ``recompute`` N, re-extract N random rows and compare
    (worst cosine at least ``min_cosine``). Returns the report (.ok, .problems, .changed, ...)."""
    import functools

    from .cache.verify import verify_cache
    from .extract import options
    from .extract.sources import source_hasher
    cache = os.fspath(cache)
    check = None
    if recompute:
        from .extract.by_fingerprint import recompute_rows
        check = functools.partial(recompute_rows, cache, recompute, data_root=data, weights_file=weights,
                                  device=device)
    return verify_cache(cache, images=images, data_root=data, recompute=check, source_hasher=source_hasher,
                        min_cosine=options.RECOMPUTE_MIN_COSINE if min_cosine is None else min_cosine)
