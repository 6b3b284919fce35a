"""Fit one classifier on cached codes by the split rules, and measure it on the reported split."""
import time
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

from cache import open_cache
from cache.schema import UNLABELED

from .ensemble import final_model, members_of, soft_vote
from .errors import ClassifyError
from .registry import DEFAULT_SCALING, get_classifier
from .splits import UNLABELED_SPLIT, plan_splits


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
        layer = "+".join(layer.split(",")) if layer else "+".join(c.layers)  # default: every cached layer
        n, width = len(c), c.width(layer)
        labels, splits, views = c.labels, c.splits.astype(str), c.views
        splits = np.where(labels == UNLABELED, UNLABELED_SPLIT, splits)  # never reported, never trained on
        if max_memory is None or rows_that_fit(n, width, max_memory) == n:
            return CodesData(c.codes(layer), labels, splits, c.class_names, layer, c.fingerprint, c.path, rows_total=n,
                             views=views)
        meta = (c.class_names, layer, c.fingerprint, c.path)
    return CodesData(None, labels, splits, *meta, rows_total=n, views=views,
                     stream=CodeStream(cache_path, layer, max_memory), seed=seed)


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


def fit_and_evaluate(data: CodesData, name: str, scaling=DEFAULT_SCALING, seed=0, fitted=None):
    """(result dict, fitted model). Hyper-parameters are chosen without the reported rows.
    fitted: name -> (result, model) of classifiers fitted on the same data already (an ensemble
    reuses its members). A classifier that refuses these rows (a ValueError from its fit, as
    scikit-learn's estimators raise) is a ClassifyError with the same message."""
    try:
        return _fit_and_evaluate(data, name, scaling, seed, fitted or {})
    except ClassifyError:
        raise
    except ValueError as exc:
        raise ClassifyError(str(exc)) from exc


def _fit_and_evaluate(data, name, scaling, seed, fitted):
    """The one path: the memory policy picks the rows (every row streamed, or the rows held in
    memory), the registry builds the estimator for the split plan, it fits on the fit rows and
    predicts the reported ones."""
    spec = get_classifier(name)
    streamed = data.X is None and spec.sweeps
    reuse = {m: model for m, (_, model) in fitted.items()} if data.X is not None else {}
    if not streamed:
        data = data.in_memory()
    plan = plan_splits(data.splits, data.y, seed, data.views)
    estimator = spec.estimator(plan.sweep_split(), scaling, seed, streamed=streamed, fitted=reuse)
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
    """Every classifier in ``names`` (default: all) on identical splits and seeds: a list of result
    dicts, in order. ``on_result(result)`` is called as each one finishes (for progress lines).
    An ensemble reuses the members fitted before it in the same run (its fit seconds are theirs).
    A classifier that cannot fit these rows (a ValueError: too few rows of a class for its sweep,
    say, on a small subsample) is skipped: its result is {"classifier", "skipped": the reason},
    and the others still run. Raises ClassifyError when every one was skipped.
    The one loop behind `compare`, `demo` and bench/stage2_bench.py."""
    from .registry import CLASSIFIERS
    results, fitted = [], {}
    for name in names or list(CLASSIFIERS):
        try:
            result, model = fit_and_evaluate(data, name, scaling, seed, fitted)
            fitted[name] = (result, model)
        except ClassifyError as error:
            result = {"classifier": name, "skipped": str(error)}
        results.append(result)
        if on_result is not None:
            on_result(result)
    if not fitted:
        raise ClassifyError("no classifier could fit these codes: " +
                         "; ".join(f"{r['classifier']}: {r['skipped']}" for r in results))
    return results


def _plain(params: dict) -> dict:
    return {k.removeprefix("clf__"): (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}
