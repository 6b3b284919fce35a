"""Classifiers of our own, written as scikit-learn estimators (fit/predict/predict_proba).

Every estimator here keeps its fitted state in plain arrays (``coef_``/``intercept_``, or the
MLP's ``w1_``...``b2_``), which model_file stores, so a model file never needs pickle. ``__init__`` only stores parameters, as scikit-learn requires.
The heads trained with torch live in torch_heads.py, so fitting any other head never imports torch.
"""
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import RidgeClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import LabelBinarizer
from sklearn.svm import LinearSVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

FLOATS = [np.float64, np.float32]


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def full_decision(decision: np.ndarray) -> np.ndarray:
    """[n, C] scores from scikit-learn's decision_function, whose binary case is one column z.

    The binary column becomes [-z/2, z/2], whose softmax is the logistic sigmoid of z: the same
    probabilities LogisticRegression gives, and the same argmax as its predict.
    """
    decision = np.asarray(decision, dtype=np.float64)
    if decision.ndim == 1:
        decision = decision[:, None]
    if decision.shape[1] == 1:
        decision = np.hstack([-decision / 2, decision / 2])
    return decision


class SoftmaxScoresMixin:
    """predict_proba for margin classifiers: the softmax of their scores (not calibrated)."""

    def predict_proba(self, X):
        return softmax(full_decision(self.decision_function(X)))


class SoftmaxLinearSVC(SoftmaxScoresMixin, LinearSVC):
    pass


class SoftmaxRidgeClassifier(SoftmaxScoresMixin, RidgeClassifier):
    def restore(self, classes_=None):
        """From a model file: RidgeClassifier predicts through a label binarizer (and, in some
        versions, reads classes_ from it), rebuilt here as its single-label fit builds it."""
        classes = self.__dict__.get("classes_") if classes_ is None else classes_
        self._label_binarizer = LabelBinarizer(pos_label=1, neg_label=-1).fit(classes)


class CosineKNNClassifier(KNeighborsClassifier):
    """k nearest neighbours by cosine distance. Keeps its training codes as public arrays
    (train_X_, train_y_), so a model file stores them and ``restore`` refits the same index."""

    def __init__(self, n_neighbors=5, weights="uniform"):
        super().__init__(n_neighbors=n_neighbors, weights=weights, metric="cosine", algorithm="brute")

    def fit(self, X, y):
        super().fit(X, y)
        self.train_X_, self.train_y_ = np.asarray(X), np.asarray(y)
        return self

    def restore(self):
        """From a model file: the same index, fitted on the same codes."""
        self.fit(self.train_X_, self.train_y_)


class ScoresClassifier(ClassifierMixin, BaseEstimator):
    """What our estimators share, as scikit-learn's checks expect: input validated once (no NaN,
    sparse, complex or empty data; the fitted width at predict), scores from ``_scores`` [n, K],
    a binary decision_function of one column, probabilities as the softmax of the scores."""

    def _validated_fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=FLOATS)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        return X, y_idx

    # _scores reads float64 rows, converted a block of this many bytes at a time (each row is
    # scored alone): a float64 copy of a million rows of 1280 would be 10 GB, and 8 of the audit's
    # 30 s at that size. None: the whole array at once (a head that batches its rows itself).
    SCORE_BLOCK_BYTES = 16 << 20

    def decision_function(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=FLOATS)
        rows = len(X) if self.SCORE_BLOCK_BYTES is None else max(1, self.SCORE_BLOCK_BYTES // (8 * X.shape[1]))
        if len(X) <= rows:
            z = self._scores(np.asarray(X, dtype=np.float64))
        else:
            z = np.concatenate([self._scores(np.asarray(X[start:start + rows], dtype=np.float64))
                                for start in range(0, len(X), rows)])
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X):
        return softmax(full_decision(self.decision_function(X)))

    def predict(self, X):
        scores = self.decision_function(X)
        return self.classes_[(scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)]


class LinearScores:
    """Scores of a linear head: X @ coef_.T + intercept_ (coef_ [K, D], intercept_ [K])."""

    def _scores(self, X):
        return X @ self.coef_.T + self.intercept_


class NearestCentroidClassifier(LinearScores, ScoresClassifier):
    """Nearest class mean (Euclidean). Linear in disguise: argmin |x-c|^2 = argmax 2x.c - |c|^2."""

    def fit(self, X, y):
        X, y_idx = self._validated_fit(X, y)
        X = np.asarray(X, dtype=np.float64)
        self.centroids_ = np.stack([X[y_idx == k].mean(axis=0) for k in range(len(self.classes_))])
        self.coef_ = 2 * self.centroids_
        self.intercept_ = -(self.centroids_ ** 2).sum(axis=1)
        return self
