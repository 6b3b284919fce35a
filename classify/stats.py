"""The statistics every result carries: accuracy with its Wilson interval, McNemar's paired test,
and the per-class figures."""
import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score


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


INDISTINGUISHABLE_P = 0.05  # McNemar's p at or above which two scorers are not told apart


def paired_vs_best(best_correct, others_correct) -> list:
    """For each of ``others_correct`` (whether each row was right, the same rows as the best's):
    (McNemar's exact p against the best, rounded; whether the data cannot tell them apart). What
    compare and rank report as "vs best"."""
    out = []
    for correct in others_correct:
        p = round(mcnemar_p(best_correct, correct), 4)
        out.append((p, p >= INDISTINGUISHABLE_P))
    return out


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
