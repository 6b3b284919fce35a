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
    import warnings

    from .extract.backbones.listing import list_backbones as rows_of
    with warnings.catch_warnings():  # the zoo libraries import tqdm.auto, which warns in a kernel
        warnings.filterwarnings("ignore", message="IProgress not found")  # without ipywidgets
        rows, _ = rows_of(pattern, probe=False)
    return [row["name"] for row in rows]


def extract_codes(data, cache, *, labels=None, layer=None, progress=False, **options):
    """Run every image of ``data`` through the backbone once, into the HDF5 ``cache``; resumable
    and incremental, as `extract`. data: a folder, manifest, tar shards, Parquet file or URL prefix;
    or what a notebook holds: a pandas DataFrame with a ``path`` column (and ``label``, ``split``),
    or a list of paths with ``labels`` beside it (rows named by absolute path, as CodesTransformer
    names them, so the two share rows). A photo the cache holds under another path is found by its
    content and moved, never encoded twice.
    options: extract's, by name (backbone, weights, precision, batch_size, workers, views, ...);
    ``layer``: one name, "a,b", "a+b", or a sequence. progress: a progress bar (a widget in Jupyter).
    Returns the ExtractSummary (.written, .skipped, .failed, .moved, .line())."""
    import tempfile

    from ._inputs import is_table, write_manifest
    from .extract import ExtractConfig, run_extract
    from .extract.config import layer_names
    if layer is not None:
        options["layers"] = layer_names(layer)
    if not is_table(data):
        if labels is not None:
            raise TypeError(f"labels: {os.fspath(data)} brings its own labels (class folders or a label column); "
                            "labels= goes with a list of paths")
        return run_extract(ExtractConfig(os.fspath(data), os.fspath(cache), progress=progress, **options))
    with tempfile.TemporaryDirectory(prefix="cnncodes-extract-") as folder:
        manifest = write_manifest(data, labels, folder)
        return run_extract(ExtractConfig(manifest, os.fspath(cache), progress=progress, **options))


LOAD_OPTIONS = ("layer", "max_memory", "with_caches", "exclude", "exclude_reported")


def load_codes(cache, layer=None, *, max_memory=None, seed=0, with_caches=None, exclude=None,
               exclude_reported=False):
    """A cache's labelled codes for stage two (a CodesData: .X .y .splits .paths .class_names .layer
    .fingerprint); the rows without a label are set apart in ``.unlabeled`` (a CodesData whose ``y``
    is -1, scikit-learn's mark of an unlabeled sample), so ``X`` and ``y`` train as they are.

    layer: one code layer, "a,b" or "a+b" side by side (default: every code layer).
    max_memory: "8G", "512M" or bytes (default: a share of this machine's memory); past it the
    codes stream, or a seeded subsample of ``seed`` is held. with_caches: other caches of the same
    photos whose codes go side by side. exclude: an audit.json (or a list of paths, one per line)
    whose rows leave training and selection, and the reported split too with ``exclude_reported``.
    What the loading decided is in ``.notes`` (the command line prints them)."""
    data = _load_every_row(cache, layer, max_memory=max_memory, seed=seed, with_caches=with_caches,
                           exclude=exclude, exclude_reported=exclude_reported)
    notes = data.notes
    data = data.labelled()
    data.notes = notes
    return data


def _load_every_row(cache, layer=None, *, max_memory=None, seed=0, with_caches=None, exclude=None,
                    exclude_reported=False):
    """load_codes with the unlabeled rows in place (split "unlabeled"): what audit, similar and
    select read, since an unlabeled photo can still be a duplicate or a neighbour."""
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
    if data.n_unlabeled:
        notes.append(f"note: {data.n_unlabeled:,} unlabeled rows left out (fit and compare use the "
                     f"{len(data) - data.n_unlabeled:,} labelled ones)")
    if exclude:
        from .classify.data import exclude_rows, read_exclusions
        paths = read_exclusions(os.fspath(exclude))
        data = exclude_rows(data, paths, reported=exclude_reported)
        where = "training, selection and the reported split" if exclude_reported else \
            "training and selection (the reported split keeps them; exclude_reported=True drops them there too)"
        notes.append(f"note: exclude={exclude}: {data.excluded:,} rows of {len(paths):,} listed paths left out of "
                     f"{where}")
    data.notes = notes
    return data


def _codes(codes, **load_options):
    """A CodesData as given, or loaded from a cache path with ``load_options``."""
    if isinstance(codes, (str, os.PathLike)):
        return load_codes(codes, **load_options)
    given = [name for name in LOAD_OPTIONS if load_options.get(name) is not None and load_options.get(name) is not False]
    if given:
        raise TypeError(f"{given[0]}= applies when codes is a cache path; pass it to load_codes(path, {given[0]}=...)")
    if not hasattr(codes, "class_names"):
        raise TypeError(f"codes: give a cache path or what load_codes returns, not {type(codes).__name__}")
    return codes


def fit(codes, classifier="logreg", *, scaling=None, seed=0, **options):
    """Fit ``classifier`` (a name of `cnncodes fit --classifier`) on the codes (a CodesData, or a
    cache path loaded with load_codes's options: layer, max_memory, with_caches, exclude,
    exclude_reported). Hyper-parameters are chosen without the reported rows, except those given
    by name, which are fixed: ``fit(codes, "logreg", C=1.0)`` trains at C=1.0 and says so
    (``result.fixed``, ``result.selection``); a name the classifier does not take is refused.
    Returns a Model: .result (accuracy with its interval, params, sweep), .predict(X),
    .predict_images(paths), .save(path), .export_onnx(path)."""
    from .classify import DEFAULT_SCALING, fit_and_evaluate
    from .classify.model_file import model_meta
    from ._model import Model
    load_options = {k: options.pop(k) for k in LOAD_OPTIONS if k in options}
    _check_hyper_parameters(classifier, options)
    data = _codes(codes, seed=seed, **load_options)
    result, pipeline = fit_and_evaluate(data, classifier, scaling or DEFAULT_SCALING, seed, params=options)
    return Model(pipeline, model_meta(classifier, result, data), result)


def _check_hyper_parameters(classifier, params):
    """Refuse, before any loading, a name that is neither a load option nor the classifier's."""
    from .classify.registry import did_you_mean, get_classifier
    spec = get_classifier(classifier)
    tunable = spec.tunable()
    for name in params:
        if name not in tunable:
            raise TypeError(f"{classifier} has no hyper-parameter or load option {name!r}"
                            f"{did_you_mean(name, tunable + list(LOAD_OPTIONS) + ['classifier', 'scaling', 'seed'])}; "
                            "hyper-parameters: "
                            f"{', '.join(tunable) or 'none'}; load options: {', '.join(LOAD_OPTIONS)}")
    spec.with_params(params)


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

    def __repr__(self) -> str:
        return f"Comparison of {len(self)} on {self.data.path} ({self.data.layer}):\n{self.table()}"

    def _repr_html_(self) -> str:
        from .classify.report import TABLE_NOTE
        from .classify.report import table_cells
        from ._display import html_table
        header, rows = table_cells(list(self))
        return html_table(header, rows, caption=f"{self.data.path}, layer {self.data.layer}: "
                          f"{len(self.data):,} labelled rows, scaling {self.scaling}, seed {self.seed}", note=TABLE_NOTE)

    def write_report(self, out_dir) -> dict:
        """report.md, report.json and the plots into ``out_dir``; returns {name: path}."""
        from .classify.report import write_report
        data = self.data
        return write_report(os.fspath(out_dir), list(self), data, {
            "cache": " + ".join([data.path] + [part["cache"] for part in data.side_by_side or []]),
            "backbone": data.fingerprint.backbone, "weights": data.fingerprint.weights,
            "layer": data.layer, "scaling": self.scaling, "seed": self.seed})


def compare(codes, classifiers=None, *, scaling=None, seed=0, on_result=None, params=None, **load_options):
    """Every classifier (or ``classifiers``: names, or "a,b") on identical splits and seeds.
    params: hyper-parameters to fix, per classifier: ``{"logreg": {"C": 1.0}}``. load_options: as
    load_codes takes them, when codes is a cache path.
    Returns a Comparison: the FitResults, .best, .table(), .to_json(), .write_report(dir)."""
    from .classify import DEFAULT_SCALING
    from .classify import compare as compare_all
    from .classify.registry import did_you_mean
    unknown = [k for k in load_options if k not in LOAD_OPTIONS]
    if unknown:
        raise TypeError(f"compare() has no option {unknown[0]!r}{did_you_mean(unknown[0], LOAD_OPTIONS)}; "
                        f"hyper-parameters go in params={{'logreg': {{'C': 1.0}}}}; load options: "
                        f"{', '.join(LOAD_OPTIONS)}")
    names = [n.strip() for n in classifiers.split(",") if n.strip()] if isinstance(classifiers, str) else classifiers
    for name, fixed in (params or {}).items():
        _check_hyper_parameters(name, fixed)
    data = _codes(codes, seed=seed, **load_options)
    scaling = scaling or DEFAULT_SCALING
    return Comparison(compare_all(data, names, scaling, seed, on_result=on_result, params=params), data, scaling,
                      seed)


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
    data = _load_every_row(cache, layer, seed=seed, **load_options)
    found = find(data, threshold=threshold, k=k, limit=limit, seed=seed)
    try:
        found["effect_on_score"] = effect_on_score(data, found["leaked"], seed)
    except ClassifyError as exc:  # no split to report on, say: the audit itself still stands
        found["effect_on_score"] = {"skipped": str(exc)}
    found["notes"] = data.notes
    if report is not None:
        from .classify.audit.report import write_audit
        found["report"] = write_audit(os.fspath(report), found, data.fingerprint.provenance.get("data_root"), data)
    from ._display import AuditFindings
    return AuditFindings(found)


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
