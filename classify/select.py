"""Which unlabelled rows should a person label next? Strategies over codes in memory, and the
simulation that shows, on a labelled cache, whether each beats random.

- uncertainty: the fixed recipe (the logreg recipe) fitted on the labelled rows; the rows with the
  smallest margin between their two most probable classes;
- diversity: k-center greedy (Sener & Savarese, 2018) on the unit-length codes: each pick is the
  row farthest (cosine) from every labelled and picked row;
- typicality: TypiClust (Hacohen et al., 2022), for a cold start: k-means into (labelled + budget)
  clusters; from each cluster without a labelled row, largest first, its most typical row (the
  one whose 20 nearest in the cluster are closest);
- margin+diversity: the 10 x budget smallest margins, then k-center greedy among them;
- random;
- auto: typicality while the labelled rows are fewer than the budget (or hold one class), then
  uncertainty: what the flowers5 simulation showed best at each stage (docs/cli.md, select).
"""
import numpy as np

from .cosine import unit

STRATEGIES = ("auto", "uncertainty", "diversity", "typicality", "margin+diversity", "random")
NEEDS_LABELS = ("uncertainty", "margin+diversity")
TYPICAL_NEIGHBOURS = 20
CLUSTER_SAMPLE = 2000  # typicality measured among at most this many rows of a cluster
MARGIN_POOL = 10       # margin+diversity: k-center among this many times the budget


def fit_recipe(X, y, seed=0):
    """The logreg recipe on few labels: C chosen on up to 3 stratified folds where every class has
    two rows or more, else C = 1."""
    from .registry import get_classifier
    counts = np.unique(y, return_counts=True)[1]
    probe = get_classifier("logreg").pipeline("standard", seed)
    if counts.min() >= 2:
        probe.set_params(clf__cv=int(min(3, counts.min())))
    else:
        probe.set_params(clf__grid=(1.0,), clf__cv=2)
    return probe.fit(X, y)


def margins(X, labelled, y_labelled, pool, seed=0) -> np.ndarray:
    """The probability margin (top class minus the second) of each pool row."""
    proba = fit_recipe(X[labelled], y_labelled, seed).predict_proba(X[pool])
    top2 = np.sort(proba, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def k_center(U, centres, candidates, budget, rng) -> np.ndarray:
    """Greedy k-center over the unit rows U: ``budget`` of ``candidates`` (indices into U), each the
    farthest from the centres and the picks before it. No centre: the first pick is random."""
    candidates = np.asarray(candidates)
    nearest = np.full(len(candidates), np.inf, dtype=np.float32)
    for start in range(0, len(centres), 4096):
        block = U[np.asarray(centres)[start:start + 4096]]
        nearest = np.minimum(nearest, 1 - (U[candidates] @ block.T).max(axis=1))
    picks = []
    for _ in range(min(budget, len(candidates))):
        i = int(rng.integers(len(candidates))) if not np.isfinite(nearest).any() else int(np.argmax(nearest))
        picks.append(candidates[i])
        nearest = np.minimum(nearest, 1 - U[candidates] @ U[candidates[i]])
        nearest[i] = -np.inf  # never picked twice
    return np.array(picks, dtype=np.int64)


def typical(U, labelled, pool, budget, seed) -> np.ndarray:
    from sklearn.cluster import KMeans
    rows = np.concatenate([labelled, pool])
    clusters = min(len(labelled) + budget, len(rows))
    assign = KMeans(n_clusters=clusters, n_init=1, random_state=seed).fit_predict(U[rows])
    covered = set(assign[:len(labelled)].tolist())
    in_pool = assign[len(labelled):]
    sizes = np.bincount(in_pool, minlength=clusters)
    rng = np.random.default_rng(seed)
    picks = []
    for cluster in np.argsort(-sizes, kind="stable"):
        if len(picks) == budget:
            break
        if cluster in covered or sizes[cluster] == 0:
            continue
        members = pool[in_pool == cluster]
        if len(members) > CLUSTER_SAMPLE:
            members = rng.choice(members, CLUSTER_SAMPLE, replace=False)
        if len(members) == 1:
            picks.append(int(members[0]))
            continue
        distance = 1 - U[members] @ U[members].T
        np.fill_diagonal(distance, np.inf)
        k = min(TYPICAL_NEIGHBOURS, len(members) - 1)
        spread = np.sort(distance, axis=1)[:, :k].mean(axis=1)
        picks.append(int(members[np.argmin(spread)]))
    if len(picks) < budget:  # more budget than uncovered clusters: the rest by diversity
        rest = np.setdiff1d(pool, picks)
        picks += k_center(U, np.concatenate([labelled, picks]).astype(np.int64), rest, budget - len(picks),
                          rng).tolist()
    return np.array(picks, dtype=np.int64)


def choose(strategy, X, labelled, y_labelled, pool, budget, seed=0) -> np.ndarray:
    """``budget`` rows of ``pool`` (indices into X) to label next, by ``strategy``."""
    labelled, pool = np.asarray(labelled, dtype=np.int64), np.asarray(pool, dtype=np.int64)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: choose {', '.join(STRATEGIES)}")
    if budget > len(pool):
        raise ValueError(f"a budget of {budget} is more than the {len(pool)} unlabelled rows")
    rng = np.random.default_rng(seed)
    if strategy == "auto":
        cold = len(labelled) < budget or len(np.unique(y_labelled)) < 2
        strategy = "typicality" if cold else "uncertainty"
    if strategy == "random":
        return rng.choice(pool, budget, replace=False)
    if strategy in NEEDS_LABELS and len(np.unique(y_labelled)) < 2:
        raise ValueError(f"{strategy} needs labelled rows of two classes or more to fit on; for a cold start use "
                         "typicality or diversity")
    U = unit(X)
    if strategy == "diversity":
        return k_center(U, labelled, pool, budget, rng)
    if strategy == "typicality":
        return typical(U, labelled, pool, budget, seed)
    margin = margins(X, labelled, y_labelled, pool, seed)
    if strategy == "uncertainty":
        return pool[np.argsort(margin, kind="stable")[:budget]]
    shortlist = pool[np.argsort(margin, kind="stable")[:MARGIN_POOL * budget]]
    return k_center(U, labelled, shortlist, budget, rng)


def simulate(X, y, pool, test, budget, rounds, seeds, start_per_class=2, strategies=STRATEGIES,
             on_round=None) -> dict:
    """Hide the pool's labels, start from ``start_per_class`` per class (seeded), and run ``rounds``
    of ``budget`` picks per strategy, refitting the recipe each round and scoring the test rows.
    Returns strategy -> accuracy [seeds, rounds + 1] (round 0: the start)."""
    pool, test = np.asarray(pool), np.asarray(test)
    curves = {s: np.zeros((seeds, rounds + 1)) for s in strategies}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        start = np.concatenate([rng.choice(pool[y[pool] == c], start_per_class, replace=False)
                                for c in np.unique(y[pool])])
        for strategy in strategies:
            labelled = start.copy()
            for r in range(rounds + 1):
                model = fit_recipe(X[labelled], y[labelled], seed)
                curves[strategy][seed, r] = float((model.predict(X[test]) == y[test]).mean())
                if on_round is not None:
                    on_round(strategy, seed, r, len(labelled), curves[strategy][seed, r])
                if r < rounds:
                    rest = np.setdiff1d(pool, labelled)
                    picks = choose(strategy, X, labelled, y[labelled], rest, budget, seed * 1000 + r)
                    labelled = np.concatenate([labelled, picks])
    return curves


def summarise(curves, start, budget) -> dict:
    """Per strategy: the mean accuracy at each round with a 95% t interval over the seeds, and the
    labels it needed to reach random's final mean accuracy (None: not within the rounds)."""
    from scipy import stats
    target = curves["random"].mean(axis=0)[-1] if "random" in curves else None
    out = {}
    for strategy, acc in curves.items():
        seeds = acc.shape[0]
        mean = acc.mean(axis=0)
        half = (stats.t.ppf(0.975, seeds - 1) * acc.std(axis=0, ddof=1) / np.sqrt(seeds)) if seeds > 1 else \
            np.zeros_like(mean)
        labels = [start + r * budget for r in range(acc.shape[1])]
        reached = next((n for n, m in zip(labels, mean) if target is not None and m >= target), None)
        out[strategy] = {"labels": labels, "mean": [round(float(m), 4) for m in mean],
                         "ci95": [[round(float(m - h), 4), round(float(m + h), 4)] for m, h in zip(mean, half)],
                         "labels_to_reach_random_final": reached}
    return out
