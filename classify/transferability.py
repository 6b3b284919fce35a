"""How well a backbone's codes suit a labelled sample, three ways, on arrays: what `rank` scores.

- the fixed linear probe, out of fold: the logreg recipe (standard scaling, multinomial logistic
  regression over its 11 values of C, chosen on 3 folds inside each training fold), every sampled
  row predicted once by a model that never saw it;
- a cosine k-NN on the same folds (no training: how the classes sit in the codes as they are);
- LogME (You et al., ICML 2021): the log marginal evidence of a Bayesian linear model from the
  codes to each one-hot label, maximised over its two precisions by the paper's fixed-point
  iteration, per row and averaged over classes. No fitting of a classifier at all; higher is better.
  A study of such scores (Agostinelli et al., ECCV 2022) found none best everywhere, so rank shows
  it beside the probe, not instead of it.
"""
import numpy as np

from .stats import wilson_interval

FOLDS = 5


def folds_for(y, seed=0, folds=FOLDS):
    """Stratified folds, shuffled by ``seed``: every row is held out exactly once."""
    from sklearn.model_selection import StratifiedKFold
    return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def probe_correct(X, y, folds, seed=0) -> np.ndarray:
    """Whether each row's out-of-fold prediction by the fixed linear probe is right."""
    from .registry import get_classifier
    logreg = get_classifier("logreg")
    predicted = np.empty(len(y), dtype=y.dtype)
    for train, held in folds:
        probe = logreg.pipeline("standard", seed)
        probe.set_params(clf__cv=3)  # C chosen inside the training fold, on 3 inner folds
        probe.fit(X[train], y[train])
        predicted[held] = probe.predict(X[held])
    return predicted == y


def knn_correct(X, y, folds, k=10) -> np.ndarray:
    """Whether each row's out-of-fold majority vote of its k nearest (cosine) is right."""
    from sklearn.neighbors import KNeighborsClassifier
    predicted = np.empty(len(y), dtype=y.dtype)
    for train, held in folds:
        knn = KNeighborsClassifier(n_neighbors=min(k, len(train)), metric="cosine", algorithm="brute")
        predicted[held] = knn.fit(X[train], y[train]).predict(X[held])
    return predicted == y


def logme(X, y, iterations=11, tol=1e-3, spectrum="auto") -> float:
    """LogME of codes X [N, D] for labels y [N] (class indices): the evidence per row, averaged
    over the classes' one-hot targets. Every eigenvalue of F^T F counts in log|A|, the D - rank zero
    ones included (each contributes log alpha). spectrum: how F's spectrum is found, "gram" (the
    D x D eigen-decomposition) or "svd"; auto takes the smaller."""
    F = np.asarray(X, dtype=np.float64)
    N, D = F.shape
    if spectrum == "gram" or (spectrum == "auto" and N > D):
        sigma, V = np.linalg.eigh(F.T @ F)
        sigma = np.clip(sigma, 0, None)
        keep = sigma > 1e-10 * sigma.max()
        U = (F @ V[:, keep]) / np.sqrt(sigma[keep])
        sigma = sigma[keep]
    else:
        U, s, _ = np.linalg.svd(F, full_matrices=False)
        keep = s > 1e-5 * s.max()
        U, sigma = U[:, keep], s[keep] ** 2
    zeros = D - len(sigma)
    evidences = []
    for c in np.unique(y):
        target = (y == c).astype(np.float64)
        x2 = (U.T @ target) ** 2
        outside = float(target @ target - x2.sum())  # the part of the target no code direction reaches
        alpha = beta = 1.0
        for _ in range(iterations):
            t = alpha / beta
            gamma = float((sigma / (sigma + t)).sum())
            m_norm2 = float((sigma * x2 / (sigma + t) ** 2).sum())
            residual2 = float((x2 / (1 + sigma / t) ** 2).sum()) + outside
            alpha, beta = gamma / (m_norm2 + 1e-5), (N - gamma) / (residual2 + 1e-5)
            if abs(alpha / beta - t) / t <= tol:
                break
        log_det = float(np.log(alpha + beta * sigma).sum()) + zeros * np.log(alpha)
        evidence = (D / 2 * np.log(alpha) + N / 2 * np.log(beta) - alpha / 2 * m_norm2 - beta / 2 * residual2
                    - log_det / 2 - N / 2 * np.log(2 * np.pi))
        evidences.append(evidence / N)
    return float(np.mean(evidences))


def accuracy_with_interval(correct) -> tuple:
    correct = np.asarray(correct, dtype=bool)
    return float(correct.mean()), wilson_interval(int(correct.sum()), len(correct))
