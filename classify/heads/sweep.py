"""The linear heads' estimators: a regularisation grid swept by cross-validation, all of it at once.

LogisticSweepCV is shaped like scikit-learn's LogisticRegressionCV (a grid of strengths, ``cv``,
then ``best_params_``, ``cv_results_`` and a refit on every row), but fits each fold's whole grid
in one batched solve (lbfgs.py). StreamedSweep is the same sweep for codes beyond the memory
budget: its X is a StreamedRows (classify/stream.py), read a load at a time, and it trains by
minibatch Adam. The memory policy (classify/evaluate.py) picks one of the two.
"""
import numpy as np
from array_api_compat import array_namespace, device as device_of
from sklearn.base import BaseEstimator, clone

from .linear import LinearScores, ScoresClassifier
from .lbfgs import SWEEP_TOL_FACTOR, STREAM_BATCH, _Heads, adam_heads, batched_lbfgs, heads_correct, solver_device, to_numpy
from .scaling import DEFAULT_SCALING, make_scaler


class LogisticSweepCV(LinearScores, ScoresClassifier):
    """Multinomial logistic regression, its regularisation chosen on held-out rows.

    param: "C" (scikit-learn's inverse strength; lambda = 1 / (C n)) or "weight_decay" (lambda
    itself). grid: the values (LogisticRegressionCV's Cs). cv: an int (stratified, shuffled folds
    seeded by random_state) or (train, test) index pairs over the rows fit receives, as
    GridSearchCV takes them. Each value is scored by its mean accuracy on the test rows; the first
    best (the strongest regularisation among ties) is refitted on every row, warm-started from its
    fold solutions. A grid of one value is fitted directly (no folds).
    device: "auto" (the GPU through torch when there is one, else numpy), "cpu" (numpy) or a torch
    device name. After fit: coef_ [K, D], intercept_ [K], best_params_, best_score_, cv_results_.
    """

    def __init__(self, param="C", grid=(1.0,), cv=5, max_iter=1000, tol=1e-4, device="auto", random_state=0):
        self.param = param
        self.grid = grid
        self.cv = cv
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.random_state = random_state

    def _values(self) -> list:
        if self.param not in ("C", "weight_decay"):
            raise ValueError(f"param={self.param!r}: choose 'C' or 'weight_decay'")
        return [float(v) for v in np.atleast_1d(self.grid)]

    def _lambdas(self, values, n) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        return (1.0 / (values * n) if self.param == "C" else values).astype(np.float32)

    def _solve(self, X, y, values, init=None, tol=None):
        """(theta [H, P] for each value, the heads, iterations per head). One batched solve of the
        whole grid, from ``init`` or zero: on flowers5 VGG16 fc7 codes it beat three stages
        warm-started along the path (docs/cli.md, the sweep), as a stage waits for its slowest head."""
        xp, dev = array_namespace(X), device_of(X)
        heads = _Heads(X, y, len(self.classes_), xp.asarray(self._lambdas(values, X.shape[0]), device=dev))
        p = X.shape[1] * len(self.classes_) + len(self.classes_)
        theta = xp.zeros((len(values), p), dtype=X.dtype, device=dev)
        if init is not None:
            theta = theta + xp.reshape(init, (1, p))
        theta, iterations = batched_lbfgs(heads, theta, self.max_iter, tol or self.tol)
        return theta, heads, iterations

    def _folds(self, y_idx) -> list:
        if isinstance(self.cv, (int, np.integer)):
            from sklearn.model_selection import StratifiedKFold
            splitter = StratifiedKFold(int(self.cv), shuffle=True, random_state=self.random_state)
            return list(splitter.split(np.zeros(len(y_idx)), y_idx))
        return [(np.asarray(train), np.asarray(test)) for train, test in self.cv]

    def _record_sweep(self, grid, fold_scores) -> int:
        """cv_results_ as GridSearchCV keeps them (params, mean_test_score, splitK_test_score);
        returns the index of the first best."""
        fold_scores = np.asarray(fold_scores, dtype=np.float64).reshape(-1, len(grid))
        mean = fold_scores.mean(axis=0)
        self.cv_results_ = {"params": [{self.param: v} for v in grid], "mean_test_score": mean,
                            **{f"split{i}_test_score": s for i, s in enumerate(fold_scores)}}
        self.best_index_ = int(np.argmax(mean))
        self.best_score_ = float(mean[self.best_index_])
        return self.best_index_

    def _keep_solution(self, theta, d, chosen, iterations):
        """The fitted head (theta [1, P], numpy or torch) as scikit-learn's attributes."""
        k = len(self.classes_)
        theta = to_numpy(theta).astype(np.float64)
        self.n_iter_ = int(iterations)
        self.coef_ = theta[0, :d * k].reshape(d, k).T.copy()
        self.intercept_ = theta[0, d * k:].copy()
        self.best_params_ = {self.param: chosen}
        return self

    def _arrays(self, X, y):
        """Validated codes (float32) and class indices, on the solver's device."""
        X, y_idx = self._validated_fit(X, y)
        X, y_idx = np.asarray(X, dtype=np.float32), y_idx.astype(np.int64)
        device = solver_device(self.device)
        if device is None:
            return X, y_idx
        import torch
        return torch.as_tensor(X, device=device), torch.as_tensor(y_idx, device=device)

    def fit(self, X, y):
        grid = self._values()
        X, y = self._arrays(X, y)
        xp, dev = array_namespace(X), device_of(X)
        chosen, init = grid[0], None
        if len(grid) > 1:
            y_numpy = to_numpy(y)
            scores, solutions = [], []
            for train, test in self._folds(y_numpy):
                if not len(test) or len(np.unique(y_numpy[train])) < len(self.classes_):
                    raise ValueError("the selection rows leave a class with no training rows")
                train, test = xp.asarray(train, device=dev), xp.asarray(test, device=dev)
                theta, heads, _ = self._solve(X[train], y[train], grid, tol=self.tol * SWEEP_TOL_FACTOR)
                scores.append(heads_correct(theta, X[test], y[test], heads.d, heads.k) / int(test.shape[0]))
                solutions.append(theta)
            best = self._record_sweep(grid, scores)
            chosen = grid[best]
            init = sum(theta[best:best + 1] for theta in solutions) / len(solutions)
        theta, heads, iterations = self._solve(X, y, [chosen], init)
        return self._keep_solution(theta, heads.d, chosen, iterations[0])


class StreamedSweep(BaseEstimator):
    """A LogisticSweepCV on codes that do not fit in memory.

    A search over a stream read from a cache (as GridSearchCV is a search over arrays), not a
    classifier of arrays: fit takes StreamedRows only, so it does not claim scikit-learn's
    classifier contract; what it fits, ``best_estimator_``, does and is checked.

    fit(X: StreamedRows, y): the scaler fitted in one streamed pass, every grid value trained by
    minibatch Adam (torch) on the sweep rows in shuffled loads, scored on the selection rows, the
    best refitted on every row. cv: one (train, test) index pair over X's rows. After fit:
    best_estimator_ (the scaler and the fitted LogisticSweepCV, as a Pipeline: what a model file
    keeps), best_params_, cv_results_."""

    def __init__(self, sweep=None, scaling=DEFAULT_SCALING, cv=None, random_state=0):
        self.sweep = sweep
        self.scaling = scaling
        self.cv = cv
        self.random_state = random_state

    def fit(self, X, y):
        import torch
        from sklearn.pipeline import Pipeline

        from .torch_heads import torch_device
        if not hasattr(X, "loads"):
            raise TypeError(f"StreamedSweep fits StreamedRows (codes read from a cache a load at a time), not "
                            f"{type(X).__name__}; in-memory codes go to LogisticSweepCV")
        stream, rows, seed = X.stream, X.rows, self.random_state
        head = clone(self.sweep)
        grid = head._values()
        scaler = make_scaler(self.scaling)
        if hasattr(scaler, "partial_fit"):
            for _, codes in X.loads():
                scaler.partial_fit(codes)
        else:  # stateless scalings: fitting only records the width
            scaler.fit(np.zeros((1, stream.width), dtype=np.float32))
        classes = np.unique(y)
        targets = np.zeros(stream.n_rows, dtype=np.int64)
        targets[rows] = np.searchsorted(classes, y)
        head.classes_, head.n_features_in_ = classes, int(stream.width)

        def on(positions):
            mask = np.zeros(stream.n_rows, dtype=bool)
            mask[rows[positions]] = True
            return mask

        def epochs(mask, salt):
            return lambda e: stream.minibatches(mask, scaler.transform, targets, STREAM_BATCH,
                                                np.random.default_rng([seed, salt, e]))
        device, k, d = torch_device(head.device), len(classes), stream.width
        p = d * k + k
        chosen, init = grid[0], torch.zeros(1, p, device=device)
        train, n_train = epochs(X.mask, 1), len(rows)
        folds = list(self.cv or [])
        if len(grid) > 1 and folds:
            if len(folds) != 1:
                raise ValueError(f"a streamed sweep takes one (train, selection) split, not {len(folds)}")
            sweep_rows, selection = on(folds[0][0]), on(folds[0][1])
            lambdas = torch.as_tensor(head._lambdas(grid, int(sweep_rows.sum())), device=device)
            theta, _ = adam_heads(epochs(sweep_rows, 0), int(sweep_rows.sum()), k, lambdas,
                                  torch.zeros(len(grid), p, device=device))
            correct, seen = np.zeros(len(grid), dtype=np.int64), 0
            for codes, labels in stream.minibatches(selection, scaler.transform, targets, STREAM_BATCH, None):
                correct += heads_correct(theta, torch.as_tensor(codes, device=device),
                                         torch.as_tensor(labels, dtype=torch.long, device=device), d, k)
                seen += len(labels)
            best = head._record_sweep(grid, [correct / max(seen, 1)])
            chosen, init = grid[best], theta[best:best + 1].clone()
        lambdas = torch.as_tensor(head._lambdas([chosen], n_train), device=device)
        theta, steps = adam_heads(train, n_train, k, lambdas, init)
        head._keep_solution(theta, d, chosen, steps)
        self.best_estimator_ = Pipeline([("scale", scaler), ("clf", head)])
        self.best_params_, self.classes_ = head.best_params_, classes
        if hasattr(head, "cv_results_"):
            self.cv_results_ = head.cv_results_
        return self

    def predict_proba(self, X):
        """X: codes in memory, or StreamedRows predicted a load at a time."""
        if hasattr(X, "loads"):
            return np.concatenate([self.best_estimator_.predict_proba(codes) for _, codes in X.loads()])
        return self.best_estimator_.predict_proba(X)

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
