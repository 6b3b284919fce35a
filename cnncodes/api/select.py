"""`select`: the unlabelled rows of a cache a person should label next, written as a manifest
`extract` reads (an empty label column to fill in): label, extract, select again. And
`select --simulate` on a labelled cache: every strategy against random, as learning curves."""
import csv
import os
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_STRATEGY = "auto"  # typicality, then uncertainty: what the flowers5 simulation showed (docs/cli.md, select)


@dataclass(repr=False)
class Selection:
    """select's answer: ``paths`` picked by ``strategy`` from the ``pool`` of unlabelled rows
    (``labelled`` rows guided it; ``elsewhere`` unlabelled rows were left out, their files not
    under the source's folder), written to the manifest ``out``."""
    cache: str
    strategy: str
    out: str
    paths: list
    pool: int
    labelled: int
    elsewhere: int

    def to_dict(self) -> dict:
        """What `cnncodes select --json` prints."""
        return asdict(self)

    def lines(self) -> list:
        return [f"{len(self.paths)} of {self.pool} unlabelled photos by {self.strategy} ({self.labelled} labelled): "
                f"{self.out}",
                f"next: fill in their labels, then `cnncodes extract {self.out} --cache {self.cache}` (the cache "
                "knows its extractor): those rows become labelled, their codes kept"]

    def __repr__(self) -> str:
        return (f"Selection({len(self.paths)} of {self.pool:,} unlabelled photos by {self.strategy} "
                f"-> {self.out})")


@dataclass(repr=False)
class SelectionSimulation:
    """simulate_selection's answer: ``summary`` (strategy -> learning curve: labels, mean, ci95,
    labels_to_reach_random_final), ``curves`` (strategy -> accuracy per seed and round), the
    ``pool`` of train rows, the ``test`` rows of ``eval_split``, and the plan."""
    cache: str
    summary: dict
    curves: dict
    pool: int
    test: int
    eval_split: str
    budget: int
    rounds: int
    seeds: int

    def to_dict(self) -> dict:
        """What `cnncodes select --simulate --json` prints."""
        return asdict(self)

    def lines(self) -> list:
        labels = next(iter(self.summary.values()))["labels"]
        out = [f"pool: {self.pool} train rows (labels hidden); test: {self.test} {self.eval_split} rows; "
               f"{self.seeds} seeds",
               f"{'strategy':<18}" + "".join(f"{n:>17}" for n in labels) + "  labels to reach random's final"]
        for strategy, curve in self.summary.items():
            cells = "".join(f"{m:>8.4f} ({lo:.3f}-{hi:.3f})"[:17].rjust(17) for m, (lo, hi) in
                            zip(curve["mean"], curve["ci95"]))
            reached = curve["labels_to_reach_random_final"]
            out.append(f"{strategy:<18}{cells}  {reached if reached is not None else 'not within the rounds'}")
        return out

    def __repr__(self) -> str:
        finals = ", ".join(f"{s} {c['mean'][-1]:.3f}" for s, c in self.summary.items())
        return (f"SelectionSimulation({self.rounds} rounds of {self.budget}, {self.seeds} seeds on "
                f"{self.cache}: final accuracy {finals})")

    def plot(self, path) -> str:
        """The learning curves with their intervals, as a PNG."""
        return plot_simulation(self, path)


def _codes(cache, layer):
    from ..classify import read_codes
    from .layers import reading_layer
    data = read_codes(os.fspath(cache), reading_layer(cache, layer))
    centre = np.ones(len(data.y), dtype=bool) if data.views is None else data.views == 0
    return data, centre


def select(cache, budget, out, *, strategy=DEFAULT_STRATEGY, layer=None, seed=0) -> "Selection":
    """Pick ``budget`` unlabelled rows by ``strategy`` and write them to the manifest ``out``
    (path, and an empty label), which must sit in the source's folder so its paths are the cache's.
    Returns a Selection (.paths, .pool, .labelled, .out); nothing is written on an error."""
    from ..cache import open_cache
    from ..classify.errors import ClassifyError
    from ..classify.select import choose
    from ..classify.splits import UNLABELED_SPLIT
    from ..extract.sources import paths_folder
    cache, out = os.fspath(cache), os.fspath(out)
    with open_cache(cache) as c:
        root = c.fingerprint.provenance.get("data_root") or ""
    base = paths_folder(root)
    if "://" in root or not os.path.isdir(base):
        raise ClassifyError(f"{cache}: its source ({root or 'unknown'}) is not a local folder or manifest, and select "
                            "writes a manifest of local files")
    if os.path.abspath(os.path.dirname(os.path.abspath(out))) != os.path.abspath(base):
        raise ClassifyError(f"{out}: write the manifest into the source's folder, where its paths are the cache's: "
                            f"out={os.path.join(base, os.path.basename(out))}")
    data, centre = _codes(cache, layer)
    pool = np.flatnonzero(centre & (data.splits == UNLABELED_SPLIT))
    labelled = np.flatnonzero(centre & (data.y >= 0))
    if not len(pool):
        raise ClassifyError(f"{cache}: no unlabelled rows to pick from; give images without a label (a manifest "
                            "with an empty label), or first measure the strategies on this labelled cache (simulate_selection; `cnncodes select CACHE --simulate --budget N`)")
    with open_cache(cache) as c:
        pool_paths = c.paths_of(data.cache_rows(pool))
    # Only rows whose file the manifest can name: under the source's folder, or by an absolute path
    # (rows another source cached under names relative to its own folder cannot be written here).
    reachable = np.array([os.path.isfile(p if os.path.isabs(p) else os.path.join(base, p)) for p in pool_paths],
                         dtype=bool)
    if not reachable.any():
        raise ClassifyError(f"{cache}: none of its {len(pool):,} unlabelled rows has its file under {base} (e.g. "
                            f"{pool_paths[0]}): they came from another folder; extract them from a manifest there, "
                            "or select from a cache of that folder")
    elsewhere, pool = int((~reachable).sum()), pool[reachable]
    try:
        picks = choose(strategy, data.X, labelled, data.y[labelled], pool, budget, seed)
    except ValueError as exc:
        raise ClassifyError(f"{cache}: {exc}") from None
    positions = np.sort(picks)
    with open_cache(cache) as c:
        paths = c.paths_of(data.cache_rows(positions))
    temporary = out + ".tmp"
    with open(temporary, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")  # LF: what sed and a shell user's tools expect
        writer.writerow(["path", "label"])
        writer.writerows([p, ""] for p in paths)
    os.replace(temporary, out)  # a whole manifest or none
    return Selection(cache, strategy, out, paths, int(len(pool)), int(len(labelled)), elsewhere)


def simulate_selection(cache, *, budget=50, rounds=5, seeds=5, start_per_class=2, layer=None, strategies=None,
                       on_round=None) -> "SelectionSimulation":
    """On a labelled cache: the train rows are the pool (labels hidden), the reported split the
    test; every strategy and random from ``start_per_class`` labels per class, ``rounds`` of
    ``budget``, over ``seeds``. Returns a SelectionSimulation (.summary: strategy -> curve with
    intervals, .curves, .pool, .test, .eval_split, .plot(path))."""
    from ..classify.errors import ClassifyError
    from ..classify.select import STRATEGIES, simulate, summarise
    from ..classify.splits import reported_split
    data, centre = _codes(cache, layer)
    labelled = centre & (data.y >= 0)
    eval_split = reported_split(data.splits[labelled])
    pool = np.flatnonzero(labelled & (data.splits == "train"))
    test = np.flatnonzero(labelled & (data.splits == eval_split))
    classes, counts = np.unique(data.y[pool], return_counts=True)
    if len(classes) < 2 or counts.min() < start_per_class:
        raise ClassifyError(f"{cache}: the simulation starts from {start_per_class} labelled train rows per class "
                            "and needs two classes or more with that many")
    if budget * rounds > len(pool) - start_per_class * len(classes):
        raise ClassifyError(f"{cache}: {rounds} rounds of {budget} need more than the "
                            f"{len(pool) - start_per_class * len(classes)} train rows left to pick from")
    strategies = tuple(strategies or STRATEGIES)
    if "random" not in strategies:
        strategies += ("random",)  # the baseline every strategy is measured against
    curves = simulate(data.X, data.y, pool, test, budget, rounds, seeds, start_per_class, strategies, on_round)
    return SelectionSimulation(os.fspath(cache), summarise(curves, start_per_class * len(classes), budget),
                               {s: c.tolist() for s, c in curves.items()}, int(len(pool)), int(len(test)), eval_split,
                               budget, rounds, seeds)


def plot_simulation(result, path) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strategy, curve in result.summary.items():
        low, high = zip(*curve["ci95"])
        line, = ax.plot(curve["labels"], curve["mean"], marker="o", label=strategy,
                        linestyle="--" if strategy == "random" else "-")
        ax.fill_between(curve["labels"], low, high, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("labelled photos")
    ax.set_ylabel(f"accuracy on {result.eval_split} ({result.test} rows)")
    ax.set_title(f"select: {result.rounds} rounds of {result.budget}, {result.seeds} seeds (95% CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
