"""`audit CACHE`: what is wrong with the data, found from the cached codes alone.

- exact duplicates: rows sharing a content key under different paths; a leak when they sit in
  different splits, a label conflict when in different classes;
- near duplicates: pairs of photos whose L2-normalised codes have a cosine at or above a
  threshold, found by exact matrix products in blocks (beyond 100,000 photos: each photo's nearest
  from the cache's faiss index of the layer when it has one, else comparisons confined to k-means
  cells: classify/audit/near_pairs.py); a leak is a
  val/test photo with a near (or exact) twin in train. The audit reads the cache's first layer
  unless told otherwise: measured on Lite0, the final pool tells two different daisies apart where
  the pool and stage 6 side by side (stage 6 dominating the cosine) do not;
- likely label errors: out-of-sample class probabilities (a cross-validated linear head on the
  centre rows, so an image's views never sit on both sides of a fold) and confident learning's
  rule (cleanlab's find_label_issues when it is installed, else the same rule written here);
- outliers: rows far from their nearest neighbours (mean cosine distance to the k nearest);
- the effect on the score: the reported split's accuracy with and without its leaked rows.
Augmented views (extract --views) are left out: they are copies by construction.
"""
import json
import os

import numpy as np

from ...cache import open_cache
from ...cache.schema import UNLABELED

from ..errors import ClassifyError
from ..gather import float32_rows
from . import near_pairs
from .near_pairs import neighbours

# Cosine thresholds for near duplicates, calibrated on planted copies (re-encoded, resized,
# cropped, mirrored): data that bench/audit_calibration.py --write measures and writes, with the
# recall and false-pair rate behind each. (backbone, layers as the audit reads them) -> threshold.
THRESHOLDS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "thresholds.json")


def _thresholds() -> tuple:
    with open(THRESHOLDS_FILE) as f:
        table = json.load(f)
    calibrated = {tuple(key.split("/", 1)): entry["threshold"] for key, entry in table["calibrated"].items()}
    return calibrated, table["generic"]


CALIBRATED, GENERIC_THRESHOLD = _thresholds()  # the generic one: backbones not calibrated; --threshold overrides


def default_threshold(backbone, layer) -> tuple:
    """(threshold, how it was chosen) for codes of this backbone and layer(s)."""
    if (backbone, layer) in CALIBRATED:
        return CALIBRATED[backbone, layer], f"calibrated for {backbone} {layer} on planted copies"
    return GENERIC_THRESHOLD, (f"a generic default: {backbone} {layer} is not calibrated; "
                               "bench/audit_calibration.py or threshold=")


# Each fold of the label check, and the model that measures the effect of leaks, trains on at
# most this many rows (a sample): out-of-sample probabilities and a with/without comparison need
# a good model, not every row, and memory stays bounded.
AUDIT_FIT_ROWS = 100_000
PREDICT_BLOCK = 4096  # rows predicted at a time: their gathered codes (21 MB at 1280) reused, not mapped afresh


def label_issues(X, y, seed=0, folds=5, rows=None) -> tuple:
    """(ranked row indices of likely label errors, out-of-sample probabilities [n, K], rule used),
    for the codes X (or X[rows]) labelled y. Each row's probabilities come from the fold that held
    it out (scikit-learn's cross_val_predict, written out so that past AUDIT_FIT_ROWS a fold
    trains on a stratified sample of its rows and no fold copies every code)."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold, train_test_split
    from sklearn.pipeline import make_pipeline

    from ..heads.standard_scaler import StandardScaler
    from ..heads.sweep import LogisticSweepCV
    rows = np.arange(len(y)) if rows is None else np.asarray(rows)
    counts = np.bincount(y)
    folds = int(min(folds, counts[counts > 0].min()))
    if folds < 2:
        raise ClassifyError("the label check needs at least 2 photos of every class")
    # copy=False: every array the head sees is a gathered copy of its own, scaled in place
    head = make_pipeline(StandardScaler(copy=False), LogisticSweepCV(param="C", grid=(0.1,)))
    proba = np.zeros((len(y), int(y.max()) + 1), dtype=np.float64)
    # a block's codes converted into it where X holds them as stored (float16)
    buffer = np.empty((min(PREDICT_BLOCK, len(rows)), X.shape[1]), dtype=np.float32)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        if len(train) > AUDIT_FIT_ROWS:
            train, _ = train_test_split(train, train_size=AUDIT_FIT_ROWS, stratify=y[train], random_state=seed)
            train = np.sort(train)
        fitted = clone(head).fit(float32_rows(X, rows[train]), y[train])
        for start in range(0, len(test), PREDICT_BLOCK):
            block = test[start:start + PREDICT_BLOCK]
            proba[np.ix_(block, fitted.classes_)] = fitted.predict_proba(float32_rows(X, rows[block], out=buffer))
    try:
        import warnings
        with warnings.catch_warnings():  # cleanlab imports tqdm.auto, which warns in a kernel without
            warnings.filterwarnings("ignore", message="IProgress not found")  # ipywidgets; no bar is shown
            from cleanlab.filter import find_label_issues
        # n_jobs=1: cleanlab's default forks a multiprocessing pool, and a fork of a process that
        # already runs threads (torch's, BLAS's, a test runner's) can deadlock in the child: seen as
        # an audit that hung for minutes under pytest-xdist. One process sorts these rows in ms.
        ranked = find_label_issues(labels=y, pred_probs=proba, return_indices_ranked_by="self_confidence",
                                   n_jobs=1)
        return np.asarray(ranked, dtype=np.int64), proba, "cleanlab.filter.find_label_issues (prune by noise rate)"
    except ImportError:
        return confident_learning(y, proba), proba, "confident learning's off-diagonal rule (cleanlab not installed)"


def confident_learning(y, proba) -> np.ndarray:
    """Rows whose given class falls below its per-class threshold (the mean probability the model
    gives that class on rows labelled with it) while another class reaches its own; ranked by the
    probability of the given class, lowest first (Northcutt et al. 2021, the confident joint)."""
    classes = proba.shape[1]
    thresholds = np.array([proba[y == c, c].mean() if np.any(y == c) else 1.0 for c in range(classes)])
    confident = proba >= thresholds[None, :]
    given = proba[np.arange(len(y)), y]
    other = confident.copy()
    other[np.arange(len(y)), y] = False
    suspects = np.flatnonzero(other.any(axis=1) & (np.argmax(proba, axis=1) != y))
    return suspects[np.argsort(given[suspects], kind="stable")]


def find_problems(data, threshold=None, k=5, limit=50, seed=0, search="auto") -> dict:
    """The audit of a CodesData held in memory (every row: duplicates cannot be found on a sample).
    search: how near pairs are found: "auto", "exact", "cells" or "index" (near_pairs.neighbours)."""
    from .near_pairs import SEARCHES
    if search not in SEARCHES:
        raise ClassifyError(f"search={search!r}: choose {', '.join(SEARCHES)}")
    if data.streamed or len(data.y) != data.rows_total:
        raise ClassifyError(f"{data.path}: the audit compares every row with every other and holds the codes in "
                            "memory; they exceed max_memory=: raise it")
    backbone = data.fingerprint.backbone
    threshold, threshold_source = (threshold, "given (threshold=)") if threshold is not None else \
        default_threshold(backbone, data.layer)
    with open_cache(data.path) as c:
        keys, paths = np.asarray(c.keys), np.asarray(c.paths, dtype=object)
        stored_splits = c.splits.astype(str)
        labels = c.labels
    centre = np.flatnonzero(data.views == 0) if data.views is not None else np.arange(len(data.y))
    if len(centre) < 2:
        raise ClassifyError(f"{data.path}: {len(centre)} photo(s): an audit needs at least two")
    names = list(data.class_names)

    def row(i, **extra):
        label = None if labels[i] == UNLABELED else names[int(labels[i])]
        return {"path": paths[i], "split": stored_splits[i], "label": label, **extra}

    # Exact duplicates: one content key, several paths.
    groups = {}
    for i in centre:
        groups.setdefault(keys[i], []).append(int(i))
    exact = []
    for members in groups.values():
        if len(members) > 1:
            exact.append({"rows": [row(i) for i in members],
                          "crosses_splits": len({stored_splits[i] for i in members}) > 1,
                          "label_conflict": len({int(labels[i]) for i in members}) > 1})
    # Near duplicates and each photo's distance to its neighbours.
    pairs, knn, how, search_kind = neighbours(data.X, threshold, k, rows=centre, index=lambda: _index_of(data),
                                                 cache_rows=data.cache_rows(centre), spread=_spread(data),
                                                 search=search)
    if search == "index" and search_kind in ("exact", "cells") and len(centre) > near_pairs.INDEX_ROWS:
        how += f" (search=index: {_no_index(data)})"
    near = []
    for a, b, cosine in sorted(pairs, key=lambda p: -p[2]):
        i, j = int(centre[a]), int(centre[b])
        if keys[i] == keys[j]:
            continue  # an exact duplicate, listed above
        near.append({"rows": [row(i), row(j)], "cosine": round(float(cosine), 4),
                     "crosses_splits": stored_splits[i] != stored_splits[j],
                     "label_conflict": int(labels[i]) != int(labels[j])})
    # Leaks: a reported-side photo (val/test) with an exact or near twin in train.
    twins = [[r["path"] for r in g["rows"]] for g in exact] + [[r["path"] for r in p["rows"]] for p in near]
    split_of = dict(zip(paths[centre], stored_splits[centre]))
    leaked = sorted({p for group in twins for p in group if split_of[p] in ("val", "test")
                     and any(split_of[q] == "train" for q in group if q != p)})
    train_twins = sorted({q for group in twins for p in group if p in leaked for q in group
                          if split_of[q] == "train"})
    # Likely label errors, on the labelled centre rows.
    labelled = centre[labels[centre] >= 0]
    issues, rule = [], None
    if len(np.unique(labels[labelled])) >= 2:
        y = labels[labelled].astype(np.int64)
        present = np.unique(y)
        y_dense = np.searchsorted(present, y)
        ranked, proba, rule = label_issues(data.X, y_dense, seed, rows=labelled)
        for r in ranked[:limit]:
            i = int(labelled[r])
            suggested = int(present[int(np.argmax(proba[r]))])
            issues.append(row(i, suggested=names[suggested], p_given=round(float(proba[r, y_dense[r]]), 4),
                              p_suggested=round(float(proba[r].max()), 4)))
        suspects = len(ranked)
    else:
        suspects = 0
    # Outliers: the farthest from their k nearest neighbours.
    order = np.argsort(-knn, kind="stable")[:limit]
    outliers = [row(int(centre[a]), knn_distance=round(float(knn[a]), 4)) for a in order]
    return {
        "cache": data.path, "backbone": backbone, "layer": data.layer, "photos": int(len(centre)),
        "threshold": threshold, "threshold_source": threshold_source, "k": k, "search": how,
        "search_kind": search_kind,
        "exact_duplicates": exact, "near_duplicates": near, "leaked": leaked, "train_twins_of_leaked": train_twins,
        "label_rule": rule, "label_issues_total": int(suspects), "label_issues": issues, "outliers": outliers,
        "counts": {
            "exact_groups": len(exact), "exact_crossing_splits": sum(g["crosses_splits"] for g in exact),
            "exact_label_conflicts": sum(g["label_conflict"] for g in exact),
            "near_pairs": len(near), "near_crossing_splits": sum(p["crosses_splits"] for p in near),
            "near_label_conflicts": sum(p["label_conflict"] for p in near),
            "leaked": len(leaked), "likely_label_errors": int(suspects)},
        # What `fit`/`compare --exclude` should drop from training: the later copies of each exact
        # group, the train twins of leaked photos, and the likely label errors.
        "exclude": sorted({r["path"] for g in exact for r in g["rows"][1:]} | set(train_twins)
                          | {r["path"] for r in issues}),
    }


def _index_of(data):
    """The cache's faiss index of the audited layer (classify/index.py), or None: without faiss, without
    an index of that layer, or for codes of several layers or caches side by side."""
    if data.side_by_side or not isinstance(data.layer, str) or "+" in data.layer:
        return None
    from ..index import open_index
    return open_index(data.path, data.layer)


def _no_index(data) -> str:
    """Why the index was not used, in words."""
    from ..index import faiss_module
    if faiss_module() is None:
        return "faiss is not installed"
    return f"the cache has no index of {data.layer} (`cnncodes index`)"


def _spread(data) -> int:
    """Rows the cache holds per photo at most: 1 + its augmented views."""
    return 1 if data.views is None or not len(data.views) else 1 + int(np.max(data.views))


def effect_on_score(data, leaked, seed=0) -> dict:
    """The reported split's logreg accuracy with every row and without the leaked ones. Past
    AUDIT_FIT_ROWS training rows the model trains on a seeded sample of them (an image's views
    with it): both accuracies come from one model, and a million-row fit would hold the codes
    three times over (most of the audit's peak at 1,000,000 rows: docs/cli.md, audit's cost)."""
    from dataclasses import replace

    from ..budget import subsample_mask
    from ..evaluate import fit_and_evaluate
    from ..splits import EXCLUDED_SPLIT, LEFT_OUT, plan_splits, reported_split
    eval_split = reported_split(data.splits[~np.isin(data.splits, LEFT_OUT)])
    fitting = np.flatnonzero(~np.isin(data.splits, (*LEFT_OUT, eval_split)))
    if len(fitting) > AUDIT_FIT_ROWS:
        keep = subsample_mask(len(fitting), AUDIT_FIT_ROWS, seed, None if data.views is None else data.views[fitting])
        splits = data.splits.copy()
        splits[fitting[~keep]] = EXCLUDED_SPLIT  # neither trains nor chooses hyper-parameters
        data = replace(data, splits=splits, _subsample=None)
    if data.X.dtype != np.float32:  # codes as stored: the rows that train or report, gathered as float32
        # (the rows left out change neither the split plan nor the model: it is the same fit)
        kept = ~np.isin(data.splits, LEFT_OUT)
        data = replace(replace(data, _X=None)._take(kept), _X=float32_rows(data.X, np.flatnonzero(kept)))
    result, _ = fit_and_evaluate(data, "logreg", seed=seed, keep_rows=True)
    plan = plan_splits(data.splits, data.y, seed, data.views)
    rows = np.flatnonzero(plan.eval_mask)
    with open_cache(data.path) as c:
        eval_paths = c.paths_of(data.cache_rows(rows))
    correct = np.asarray(result.eval_correct, dtype=bool)
    leaked = set(leaked)
    clean = np.array([p not in leaked for p in eval_paths])
    return {"classifier": "logreg", "eval_split": result.eval_split, "n_eval": int(len(rows)),
            "trained_on": int(np.count_nonzero(plan.fit_mask)), "training_rows": int(len(fitting)),
            "accuracy": result.accuracy, "n_without_leaked": int(clean.sum()),
            "accuracy_without_leaked": float(correct[clean].mean()) if clean.any() else None}
