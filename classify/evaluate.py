"""Fit one classifier on cached codes by the split rules, and measure it on the reported split."""
import time

import numpy as np

from ..cache import open_cache

from .data import CodesData
from .errors import ClassifyError
from .heads.ensemble import final_model, members_of, soft_vote
from .registry import DEFAULT_SCALING, get_classifier
from .result import FitResult, Skipped
from .splits import plan_splits
from .stats import metrics, paired_vs_best


def fit_and_evaluate(data: CodesData, name: str, scaling=DEFAULT_SCALING, seed=0, fitted=None, keep_rows=False,
                     params=None):
    """(FitResult, fitted model). Hyper-parameters are chosen without the reported rows; those in
    ``params`` (name -> value) are fixed by the caller instead, and the result says so (``fixed``).
    keep_rows: the result also holds ``eval_correct``, whether each reported row was right (what
    compare's paired test needs; compare removes it; never in its JSON).
    fitted: name -> (result, model) of classifiers fitted on the same data already (an ensemble
    reuses its members). A classifier that refuses these rows (a ValueError from its fit, as
    scikit-learn's estimators raise) is a ClassifyError with the same message."""
    try:
        result, model = _fit_and_evaluate(data, name, scaling, seed, fitted or {}, params or {})
        if not keep_rows:
            result.eval_correct = None
        return result, model
    except ClassifyError:
        raise
    except ValueError as exc:
        raise ClassifyError(str(exc)) from exc


def _fit_and_evaluate(data, name, scaling, seed, fitted, fixed):
    """The one path: the memory policy picks the rows (every row streamed, or the rows held in
    memory), the registry builds the estimator for the split plan, it fits on the fit rows and
    predicts the reported ones."""
    spec = get_classifier(name).with_params(fixed)
    source = spec.check_layer(data.layer, data.fingerprint, data.path)
    if source and data.side_by_side:
        raise ClassifyError(f"classifier={name}: trains on one map layer, not on codes of several caches side by side")
    streamed = data.streamed and spec.sweeps
    reuse = {} if data.streamed else {m: model for m, (_, model) in fitted.items()}
    if not streamed:
        data = data.in_memory()
    plan = plan_splits(data.splits, data.y, seed, data.views)
    estimator = spec.estimator(plan.sweep_split(), scaling, seed, streamed=streamed, fitted=reuse, source=source)
    started = time.perf_counter()
    estimator.fit(data.codes_of(plan.fit_mask), data.y[plan.fit_mask])
    fit_seconds = time.perf_counter() - started
    proba = estimator.predict_proba(data.codes_of(plan.eval_mask))
    swept = any(len(values) > 1 for values in spec.grid.values()) or bool(spec.members)
    selection = plan.selection if swept else "none (no hyper-parameters)"
    if fixed:
        given = ", ".join(f"{k}={v!r}" for k, v in fixed.items())
        selection = f"{plan.selection}; fixed by the caller: {given}" if swept else f"none (fixed by the caller: {given})"
    if spec.members:  # a soft vote: members' own choices and seconds; the kept model holds their models
        model = soft_vote(members_of(estimator), estimator.classes_)
        chosen, sweep = {}, []
        for member, member_model in members_of(estimator):
            params = (fitted[member][0].params if member in reuse else
                      _chosen_params_and_sweep(member_model, estimator, member)[0])
            chosen.update({f"{member}.{k}": v for k, v in params.items()})
        fit_seconds += sum(fitted[m][0].fit_seconds for m in reuse if m in spec.members)
        selection, memory = f"each member's own ({plan.selection})", _memory_note(data, "members fitted on it")
    else:
        model = final_model(estimator)
        chosen, sweep = _chosen_params_and_sweep(model, estimator)
        memory = (f"every row, streamed in loads of up to {data.stream.load_rows:,} rows" if streamed else
                  _memory_note(data, f"{name} does not stream"))
    y_pred = model.classes_[proba.argmax(axis=1)]
    result = FitResult(
        classifier=name, layer=data.layer, scaling=spec.scaling or scaling, eval_split=plan.eval_split,
        selection=selection, n_fit=int(plan.fit_mask.sum()), rows_used=int(len(data.y)),
        rows_total=int(data.rows_total or len(data.y)), n_eval=int(plan.eval_mask.sum()),
        **metrics(data.y[plan.eval_mask], y_pred, data.class_names),
        fit_seconds=round(fit_seconds, 3), params=chosen, sweep=sweep, memory=memory,
        mistakes=_mistakes(data, plan.eval_mask, y_pred, proba),
        unlabeled_left_out=data.n_unlabeled or None, excluded=data.excluded or None, fixed=dict(fixed) or None,
        eval_correct=(y_pred == data.y[plan.eval_mask]).astype(int),
        eval_rows=data.cache_rows(np.flatnonzero(plan.eval_mask)), eval_predicted=y_pred.astype(np.int32),
        eval_probability=proba.max(axis=1).astype(np.float32))
    return result, model


def _chosen_params_and_sweep(model, estimator, member=None) -> tuple:
    """(chosen parameters, sweep [{params, selection_accuracy}]) from whichever holds the search's
    results: GridSearchCV or a streamed sweep (``estimator``), or the LogisticSweepCV inside the model.
    member: the search is that member of a fitted vote."""
    if member is not None:
        estimator = estimator.named_estimators_[member]
    holder = estimator if hasattr(estimator, "cv_results_") else model.steps[-1][1]
    if not hasattr(holder, "cv_results_"):
        return _plain_params(getattr(holder, "best_params_", {})), []
    results = holder.cv_results_
    sweep = [{"params": _plain_params(p), "selection_accuracy": float(s)}
             for p, s in zip(results["params"], results["mean_test_score"])]
    return _plain_params(holder.best_params_), sweep


def _memory_note(data, why_subsample) -> str:
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


def compare(data: CodesData, names=None, scaling=DEFAULT_SCALING, seed=0, on_result=None, params=None) -> list:
    """Every classifier in ``names`` (default: all that fit the layer) on identical splits and seeds: a list of
    FitResults, in order. ``on_result(result)`` is called as each one finishes (for progress lines).
    An ensemble reuses the members fitted before it in the same run (its fit seconds are theirs).
    A classifier that cannot fit these rows (a ValueError: too few rows of a class for its sweep,
    say, on a small subsample) is skipped: its result is a Skipped (classifier, the reason),
    and the others still run. Raises ClassifyError when every one was skipped.
    params: classifier -> {hyper-parameter: value} fixed by the caller (checked before any fit).
    The one loop behind `compare`, `demo` and bench/stage2_bench.py."""
    from .registry import classifiers_for, did_you_mean
    names = list(names or classifiers_for(data.layer, data.fingerprint))
    for name in names:
        get_classifier(name)  # an unknown name is refused before any fit, not listed as skipped
    plan_splits(data.splits, data.y, seed, data.views)  # what no classifier can fit is said once, not per classifier
    params = dict(params or {})
    for name, fixed in params.items():
        if name not in names:
            raise ClassifyError(f"params names {name!r}, which this comparison does not fit"
                                f"{did_you_mean(name, names)}; it fits {', '.join(names)}")
        get_classifier(name).with_params(fixed)  # a wrong name fails here, not as a skipped classifier
    results, fitted = [], {}
    for name in names:
        try:
            result, model = fit_and_evaluate(data, name, scaling, seed, fitted, keep_rows=True,
                                             params=params.get(name))
            fitted[name] = (result, model)
        except ClassifyError as error:
            result = Skipped(name, str(error))
        results.append(result)
        if on_result is not None:
            on_result(result)
    if not fitted:
        raise ClassifyError("no classifier could fit these codes: " +
                         "; ".join(f"{r.classifier}: {r.skipped}" for r in results))
    _add_paired_tests(results)
    return results


def _add_paired_tests(results) -> None:
    """Each fitted result gets ``p_vs_best``: McNemar's exact test against the best on the same
    reported rows (None for the best itself), and ``indistinguishable_from_best`` (p >= 0.05)."""
    from .report import best_result, fitted_results
    done, best = fitted_results(results), best_result(results)
    others = [r for r in done if r is not best]
    for r, (p, same) in zip(others, paired_vs_best(best.eval_correct, [r.eval_correct for r in others])):
        r.compared, r.p_vs_best, r.indistinguishable_from_best = True, p, same
    best.compared, best.p_vs_best, best.indistinguishable_from_best = True, None, True
    for r in done:
        r.eval_correct = None


def _plain_params(params: dict) -> dict:
    return {k.removeprefix("clf__"): (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}
