"""Fit one classifier on cached codes by the split rules, and measure it on the reported split."""
import time
from dataclasses import dataclass

import numpy as np
from sklearn.base import clone
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score
from sklearn.model_selection import GridSearchCV

from cache import open_cache

from .registry import DEFAULT_SCALING, get_classifier
from .splits import plan_splits


@dataclass
class CodesData:
    """Everything stage two needs from a cache, loaded once."""
    X: np.ndarray          # float32 [N, D]
    y: np.ndarray          # int [N]
    splits: np.ndarray     # str [N]
    class_names: list
    layer: str
    fingerprint: dict
    path: str
    rows: np.ndarray = None  # each row's index in the cache (None: all rows, in order)
    rows_total: int = None  # rows in the cache (more than len(X) when a memory budget subsampled them)

    def cache_rows(self, positions) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        return positions if self.rows is None else self.rows[positions]


def load_codes(cache_path, layer=None, max_memory=None, seed=0) -> CodesData:
    """The cache's codes as float32, within ``max_memory`` bytes (None: no limit): beyond it, a
    seeded random subsample of rows that fits (CodesData.rows_total says how many there were)."""
    from .budget import rows_that_fit, subsample_mask
    with open_cache(cache_path) as c:
        layer = layer or c.default_layer
        n, width = len(c), c.width(layer)
        keep = n if max_memory is None else rows_that_fit(n, width, max_memory)
        mask = None if keep == n else subsample_mask(n, keep, seed)
        if mask is None:
            return CodesData(c.codes(layer), c.labels, c.splits.astype(str), c.class_names, layer,
                             c.fingerprint, c.path, rows_total=n)
        return CodesData(c.codes(layer, rows=mask), c.labels[mask], c.splits.astype(str)[mask], c.class_names,
                         layer, c.fingerprint, c.path, np.flatnonzero(mask), rows_total=n)


def metrics(y_true, y_pred, class_names) -> dict:
    labels = list(range(len(class_names)))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(axis=1)
    per_class = {name: (float(cm[i, i] / support[i]) if support[i] else None) for i, name in enumerate(class_names)}
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        # Over the classes present in the reported rows (or predicted), as scikit-learn's default does.
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
    }


def fit_and_evaluate(data: CodesData, name: str, scaling=DEFAULT_SCALING, seed=0):
    """(result dict, fitted pipeline). Hyper-parameters are chosen without the reported rows."""
    spec = get_classifier(name)
    plan = plan_splits(data.splits, data.y, seed)
    X_fit, y_fit = data.X[plan.fit_mask], data.y[plan.fit_mask]
    pipeline = spec.pipeline(scaling, seed)
    grid = _feasible(spec.param_grid(), int((plan.selection_fold == -1).sum()))
    started = time.perf_counter()
    sweep = []
    if spec.path:  # the estimator sweeps its grid itself, scored on the same selection rows
        model = pipeline.fit(X_fit, y_fit, clf__selection=plan.selection_fold == 0)
        head = model.named_steps["clf"]
        chosen = head.best_params_
        sweep = [{"params": params, "selection_accuracy": accuracy} for params, accuracy in head.sweep_]
    elif grid:
        search = GridSearchCV(pipeline, grid, cv=plan.predefined_split(), scoring="accuracy", refit=True,
                              n_jobs=1, error_score="raise")
        search.fit(X_fit, y_fit)
        model, chosen = search.best_estimator_, search.best_params_
        sweep = [{"params": _plain(p), "selection_accuracy": float(s)}
                 for p, s in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"])]
    else:
        model, chosen = clone(pipeline).fit(X_fit, y_fit), {}
    fit_seconds = time.perf_counter() - started
    proba = model.predict_proba(data.X[plan.eval_mask])
    y_pred = model.classes_[proba.argmax(axis=1)]
    result = {
        "classifier": name,
        "layer": data.layer,
        "scaling": spec.scaling or scaling,
        "eval_split": plan.eval_split,
        "selection": plan.selection if grid else "none (no hyper-parameters)",
        "n_fit": int(plan.fit_mask.sum()),
        "rows_used": int(len(data.y)),
        "rows_total": int(data.rows_total or len(data.y)),
        "n_eval": int(plan.eval_mask.sum()),
        **metrics(data.y[plan.eval_mask], y_pred, data.class_names),
        "fit_seconds": round(fit_seconds, 3),
        "params": _plain(chosen),
        "sweep": sweep,
        "mistakes": _mistakes(data, plan.eval_mask, y_pred, proba),
    }
    return result, model


def _mistakes(data, eval_mask, y_pred, proba, limit=200) -> list:
    """The reported rows the model got wrong, most confident first: row (in the cache), path, true,
    predicted, probability. Only these rows' paths are read from the cache."""
    rows = np.flatnonzero(eval_mask)
    wrong = np.flatnonzero(y_pred != data.y[eval_mask])
    wrong = wrong[np.argsort(-proba[wrong].max(axis=1), kind="stable")][:limit]
    cache_rows = data.cache_rows(rows[wrong])
    with open_cache(data.path) as c:
        paths = c.paths_of(cache_rows)
    return [{"row": int(row), "path": path, "true": data.class_names[int(data.y[rows[i]])],
             "predicted": data.class_names[int(y_pred[i])], "probability": float(proba[i].max())}
            for i, row, path in zip(wrong, cache_rows, paths)]


def compare(data: CodesData, names=None, scaling=DEFAULT_SCALING, seed=0, on_result=None) -> list:
    """Every classifier in ``names`` (default: all) on identical splits and seeds: a list of result
    dicts, in order. ``on_result(result)`` is called as each one finishes (for progress lines).
    The one loop behind `compare`, `demo` and bench/stage2_bench.py."""
    from .registry import CLASSIFIERS
    results = []
    for name in names or list(CLASSIFIERS):
        result, _ = fit_and_evaluate(data, name, scaling, seed)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _feasible(grid: dict, n_train: int) -> dict:
    """Drop neighbour counts larger than the rows that train during the sweep (tiny data sets)."""
    if "clf__n_neighbors" in grid:
        grid = dict(grid, clf__n_neighbors=[k for k in grid["clf__n_neighbors"] if k <= n_train] or [1])
    return grid


def _plain(params: dict) -> dict:
    return {k.removeprefix("clf__"): (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}
