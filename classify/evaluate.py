"""Fit one classifier on cached codes by the split rules, and measure it on the reported split."""
import time
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

from ..cache import open_cache
from ..cache.schema import UNLABELED

from .ensemble import final_model, members_of, soft_vote
from .errors import ClassifyError
from .registry import DEFAULT_SCALING, get_classifier
from .splits import EXCLUDED_SPLIT, LEFT_OUT, UNLABELED_SPLIT, plan_splits, reported_split


@dataclass
class CodesData:
    """Everything stage two needs from a cache, loaded once."""
    X: np.ndarray          # float32 [N, D]
    y: np.ndarray          # int [N]
    splits: np.ndarray     # str [N]
    class_names: list
    layer: str
    fingerprint: object    # cache.Fingerprint
    path: str
    rows: np.ndarray = None  # each row's index in the cache (None: all rows, in order)
    rows_total: int = None  # rows in the cache (more than len(X) when a memory budget subsampled them)
    views: np.ndarray = None  # uint8 [N]: 0 a centre view, 1..K an augmented view of the image before it
    stream: object = None   # a CodeStream when the codes exceed the budget: X is None, y/splits cover every row
    seed: int = 0           # the subsample's seed (budget exceeded)
    side_by_side: list = None  # other caches' codes appended as columns (classify/joined.py): cache, layer, fingerprint
    _subsample: "CodesData" = None

    @property
    def unlabeled(self) -> int:
        """Rows without a label: left out of fitting and reporting."""
        return int(np.count_nonzero(self.splits == UNLABELED_SPLIT))

    @property
    def excluded(self) -> int:
        """Rows dropped by exclude_rows (--exclude)."""
        return int(np.count_nonzero(self.splits == EXCLUDED_SPLIT))

    def in_memory_rows(self) -> int:
        """Rows that ``in_memory()`` holds."""
        from .budget import rows_that_fit
        return len(self.y) if self.X is not None else rows_that_fit(len(self.y), self.stream.width, self.stream.budget)

    def in_memory(self) -> "CodesData":
        """These codes held in memory: themselves, or (budget exceeded) the seeded random subsample
        of rows that fits, read once and kept for the next classifier."""
        if self.X is not None:
            return self
        if self._subsample is None:
            from .budget import subsample_mask
            keep = subsample_mask(len(self.y), self.in_memory_rows(), self.seed, self.views)
            with open_cache(self.path) as c:
                X = c.codes(self.layer, rows=keep)
            self._subsample = CodesData(X, self.y[keep], self.splits[keep], self.class_names, self.layer,
                                        self.fingerprint, self.path, np.flatnonzero(keep), rows_total=len(self.y),
                                        views=None if self.views is None else self.views[keep])
        return self._subsample

    def codes_of(self, mask):
        """The codes of the rows in ``mask``: an array, or StreamedRows when they are streamed."""
        if self.X is not None:
            return self.X[mask]
        from .stream import StreamedRows
        return StreamedRows(self.stream, np.asarray(mask, dtype=bool))

    def cache_rows(self, positions) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        return positions if self.rows is None else self.rows[positions]


def load_codes(cache_path, layer=None, max_memory=None, seed=0) -> CodesData:
    """The cache's codes as float32, when they fit in ``max_memory`` bytes (None: no limit).
    layer: one layer, or several ("a,b" or "a+b"), concatenated; default every layer the cache holds.
    Beyond it, no codes are read here: ``stream`` reads them a load at a time for the heads that
    stream (logreg, linear), and ``in_memory()`` gives the others a seeded random subsample that fits."""
    from .budget import rows_that_fit
    from .stream import CodeStream
    with open_cache(cache_path) as c:
        layer = "+".join(layer.split(",")) if layer else default_layer(c.layers, c.fingerprint)
        n, width = len(c), c.width(layer)
        labels, splits, views = c.labels, c.splits.astype(str), c.views
        splits = np.where(labels == UNLABELED, UNLABELED_SPLIT, splits)  # never reported, never trained on
        if max_memory is None or rows_that_fit(n, width, max_memory) == n:
            return CodesData(c.codes(layer), labels, splits, c.class_names, layer, c.fingerprint, c.path, rows_total=n,
                             views=views)
        meta = (c.class_names, layer, c.fingerprint, c.path)
    return CodesData(None, labels, splits, *meta, rows_total=n, views=views,
                     stream=CodeStream(cache_path, layer, max_memory), seed=seed)


def default_layer(layers, fingerprint) -> str:
    """Every cached layer of codes side by side; a cache of maps alone: its first map."""
    codes = [name for name in layers if name not in fingerprint.map_shapes]
    return "+".join(codes) if codes else layers[0]


def wilson_interval(correct: int, n: int, confidence=0.95) -> list:
    """[low, high] of the Wilson score interval for an accuracy of correct / n (scipy's)."""
    if n == 0:
        return [0.0, 1.0]
    from scipy.stats import binomtest
    ci = binomtest(correct, n).proportion_ci(confidence_level=confidence, method="wilson")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def mcnemar_p(a_correct, b_correct) -> float:
    """Two-sided exact McNemar test of two classifiers on the same rows: the binomial test of the
    rows only one of them gets right (1.0 when there are none)."""
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    from scipy.stats import binomtest
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def read_exclusions(path) -> list:
    """Paths to leave out: an audit's JSON (its "exclude" list) or a text file, one path a line."""
    import json
    import os
    if not os.path.isfile(path):
        raise ClassifyError(f"--exclude {path}: no such file; give an audit's audit.json or a list of paths")
    with open(path) as f:
        text = f.read()
    if text.lstrip().startswith("{"):
        try:
            return list(json.loads(text)["exclude"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ClassifyError(f"--exclude {path}: a JSON file needs an \"exclude\" list of paths ({exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def exclude_rows(data: "CodesData", paths, reported=False) -> "CodesData":
    """These paths' rows (their views too) neither train nor choose hyper-parameters; with
    ``reported`` they leave the reported split as well. Returns a CodesData whose ``excluded``
    says how many rows went."""
    from dataclasses import replace
    with open_cache(data.path) as c:
        cache_paths = np.asarray(c.paths_of(data.cache_rows(np.arange(len(data.y)))), dtype=object)
    drop = np.isin(cache_paths, np.asarray(list(paths), dtype=object))
    eval_split = reported_split(data.splits[~np.isin(data.splits, LEFT_OUT)])
    if not reported:
        drop &= data.splits != eval_split
    splits = np.where(drop, EXCLUDED_SPLIT, data.splits)
    return replace(data, splits=splits, _subsample=None)


def metrics(y_true, y_pred, class_names) -> dict:
    labels = list(range(len(class_names)))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(axis=1)
    per_class = {name: (float(cm[i, i] / support[i]) if support[i] else None) for i, name in enumerate(class_names)}
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "accuracy_ci95": wilson_interval(int(np.sum(np.asarray(y_true) == np.asarray(y_pred))), len(y_true)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        # Over the classes present in the reported rows (or predicted), as scikit-learn's default does.
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
    }


def fit_and_evaluate(data: CodesData, name: str, scaling=DEFAULT_SCALING, seed=0, fitted=None, keep_rows=False):
    """(result dict, fitted model). Hyper-parameters are chosen without the reported rows.
    keep_rows: the result also holds ``eval_correct``, whether each reported row was right (what
    compare's paired test needs; compare removes it).
    fitted: name -> (result, model) of classifiers fitted on the same data already (an ensemble
    reuses its members). A classifier that refuses these rows (a ValueError from its fit, as
    scikit-learn's estimators raise) is a ClassifyError with the same message."""
    try:
        result, model = _fit_and_evaluate(data, name, scaling, seed, fitted or {})
        if not keep_rows:
            result.pop("eval_correct")
        return result, model
    except ClassifyError:
        raise
    except ValueError as exc:
        raise ClassifyError(str(exc)) from exc


def _fit_and_evaluate(data, name, scaling, seed, fitted):
    """The one path: the memory policy picks the rows (every row streamed, or the rows held in
    memory), the registry builds the estimator for the split plan, it fits on the fit rows and
    predicts the reported ones."""
    spec = get_classifier(name)
    source = spec.check_layer(data.layer, data.fingerprint, data.path)
    if source and data.side_by_side:
        raise ClassifyError(f"--classifier {name}: trains on one map layer, not on codes of several caches side by side")
    streamed = data.X is None and spec.sweeps
    reuse = {m: model for m, (_, model) in fitted.items()} if data.X is not None else {}
    if not streamed:
        data = data.in_memory()
    plan = plan_splits(data.splits, data.y, seed, data.views)
    estimator = spec.estimator(plan.sweep_split(), scaling, seed, streamed=streamed, fitted=reuse, source=source)
    started = time.perf_counter()
    estimator.fit(data.codes_of(plan.fit_mask), data.y[plan.fit_mask])
    fit_seconds = time.perf_counter() - started
    proba = estimator.predict_proba(data.codes_of(plan.eval_mask))
    swept = bool(spec.grid) or bool(spec.members)
    selection = plan.selection if swept else "none (no hyper-parameters)"
    if spec.members:  # a soft vote: members' own choices and seconds; the kept model holds their models
        model = soft_vote(members_of(estimator), estimator.classes_)
        chosen, sweep = {}, []
        for member, member_model in members_of(estimator):
            params = fitted[member][0]["params"] if member in reuse else _chosen(member_model, estimator,
                                                                                   member)[0]
            chosen.update({f"{member}.{k}": v for k, v in params.items()})
        fit_seconds += sum(fitted[m][0]["fit_seconds"] for m in reuse if m in spec.members)
        selection, memory = f"each member's own ({plan.selection})", _held(data, "members fitted on it")
    else:
        model = final_model(estimator)
        chosen, sweep = _chosen(model, estimator)
        memory = (f"every row, streamed in loads of up to {data.stream.load_rows:,} rows" if streamed else
                  _held(data, f"{name} does not stream"))
    result = _result(data, name, spec, scaling, plan, selection, chosen, sweep, fit_seconds, proba, model, memory)
    if data.unlabeled:
        result["unlabeled_left_out"] = data.unlabeled
    if data.excluded:
        result["excluded"] = data.excluded
    return result, model


def _chosen(model, estimator, member=None) -> tuple:
    """(chosen parameters, sweep [{params, selection_accuracy}]) from whichever holds the search's
    results: GridSearchCV or a streamed sweep (``estimator``), or the LogisticSweepCV inside the model.
    member: the search is that member of a fitted vote."""
    if member is not None:
        estimator = estimator.named_estimators_[member]
    holder = estimator if hasattr(estimator, "cv_results_") else model.steps[-1][1]
    if not hasattr(holder, "cv_results_"):
        return _plain(getattr(holder, "best_params_", {})), []
    results = holder.cv_results_
    sweep = [{"params": _plain(p), "selection_accuracy": float(s)}
             for p, s in zip(results["params"], results["mean_test_score"])]
    return _plain(holder.best_params_), sweep


def _result(data, name, spec, scaling, plan, selection, chosen, sweep, fit_seconds, proba, model, memory) -> dict:
    y_pred = model.classes_[proba.argmax(axis=1)]
    return {
        "classifier": name,
        "layer": data.layer,
        "scaling": spec.scaling or scaling,
        "eval_split": plan.eval_split,
        "selection": selection,
        "n_fit": int(plan.fit_mask.sum()),
        "rows_used": int(len(data.y)),
        "rows_total": int(data.rows_total or len(data.y)),
        "n_eval": int(plan.eval_mask.sum()),
        **metrics(data.y[plan.eval_mask], y_pred, data.class_names),
        "fit_seconds": round(fit_seconds, 3),
        "params": chosen,
        "sweep": sweep,
        "memory": memory,
        "mistakes": _mistakes(data, plan.eval_mask, y_pred, proba),
        "eval_correct": (y_pred == data.y[plan.eval_mask]).astype(int).tolist(),
    }


def _held(data, why_subsample) -> str:
    """How the rows of in-memory codes were held, for the result's ``memory``."""
    if len(data.y) == data.rows_total:
        return "all rows in memory"
    return f"a seeded random subsample of {len(data.y):,} of {data.rows_total:,} rows ({why_subsample})"


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
    """Every classifier in ``names`` (default: all that fit the layer) on identical splits and seeds: a list of result
    dicts, in order. ``on_result(result)`` is called as each one finishes (for progress lines).
    An ensemble reuses the members fitted before it in the same run (its fit seconds are theirs).
    A classifier that cannot fit these rows (a ValueError: too few rows of a class for its sweep,
    say, on a small subsample) is skipped: its result is {"classifier", "skipped": the reason},
    and the others still run. Raises ClassifyError when every one was skipped.
    The one loop behind `compare`, `demo` and bench/stage2_bench.py."""
    from .registry import classifiers_for
    results, fitted = [], {}
    for name in names or classifiers_for(data.layer, data.fingerprint):
        try:
            result, model = fit_and_evaluate(data, name, scaling, seed, fitted, keep_rows=True)
            fitted[name] = (result, model)
        except ClassifyError as error:
            result = {"classifier": name, "skipped": str(error)}
        results.append(result)
        if on_result is not None:
            on_result(result)
    if not fitted:
        raise ClassifyError("no classifier could fit these codes: " +
                         "; ".join(f"{r['classifier']}: {r['skipped']}" for r in results))
    _against_the_best(results)
    return results


def _against_the_best(results) -> None:
    """Each fitted result gets ``p_vs_best``: McNemar's exact test against the best on the same
    reported rows (None for the best itself), and ``indistinguishable_from_best`` (p >= 0.05)."""
    from .report import best_result, fitted_results
    done, best = fitted_results(results), best_result(results)
    for r in done:
        if r is best:
            r["p_vs_best"], r["indistinguishable_from_best"] = None, True
        else:
            r["p_vs_best"] = round(mcnemar_p(best["eval_correct"], r["eval_correct"]), 4)
            r["indistinguishable_from_best"] = r["p_vs_best"] >= 0.05
    for r in done:
        del r["eval_correct"]


def _plain(params: dict) -> dict:
    return {k.removeprefix("clf__"): (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}
