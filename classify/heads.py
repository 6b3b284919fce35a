"""Classifiers of our own, written as scikit-learn estimators (fit/predict/predict_proba).

Every estimator here keeps its fitted state in plain arrays (``coef_``/``intercept_``, or the
MLP's ``w1_``...``b2_``), which model_file stores, so a model file never needs pickle. ``__init__`` only stores parameters, as scikit-learn requires.
"""
import numpy as np
import torch
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


def linear_form(coef, intercept):
    """coef/intercept in the [C, D]/[C] form that full_decision gives for the binary case."""
    coef, intercept = np.atleast_2d(coef), np.atleast_1d(intercept)
    if coef.shape[0] == 1:
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.hstack([-intercept / 2, intercept / 2])
    return coef, intercept


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

    def decision_function(self, X):
        check_is_fitted(self)
        z = self._scores(np.asarray(validate_data(self, X, reset=False, dtype=FLOATS), dtype=np.float64))
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


def torch_device(name="auto"):
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


class _TorchClassifier(ScoresClassifier):
    """Shared fit plumbing: validation, label encoding, tensors on the device, a local seed
    (torch.Generator: fitting never touches the global torch seed)."""

    def _prepare(self, X, y):
        X, y_idx = self._validated_fit(X, y)
        device = torch_device(self.device)
        Xt = torch.as_tensor(np.asarray(X, dtype=np.float32), device=device)
        yt = torch.as_tensor(y_idx, dtype=torch.long, device=device)
        return Xt, yt, device

    def _generator(self):
        return torch.Generator().manual_seed(int(self.random_state or 0))


def _linear_layer(d, k, device, generator):
    """nn.Linear's default initialisation, drawn from a local generator."""
    layer = torch.nn.Linear(d, k)
    bound = 1 / d ** 0.5
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer.to(device)


def train_minibatches(net, opt, Xt, yt, batch_size, epochs, gen):
    """Shuffled mini-batch cross-entropy training, seeded (shared by the seed recipe and the MLP)."""
    for _ in range(epochs):
        for idx in torch.randperm(len(Xt), generator=gen).split(batch_size):
            idx = idx.to(Xt.device)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx]).backward()
            opt.step()


class SeedRecipeClassifier(LinearScores, _TorchClassifier):
    """The classic exercise's final layer, replayed on cached codes: a fresh Linear(D, C) trained
    with SGD (lr 0.001, momentum 0.9), mini-batches of 20, 2 epochs, no feature scaling."""

    def __init__(self, lr=0.001, momentum=0.9, batch_size=20, epochs=2, device="auto", random_state=0):
        self.lr = lr
        self.momentum = momentum
        self.batch_size = batch_size
        self.epochs = epochs
        self.device = device
        self.random_state = random_state

    def fit(self, X, y):
        Xt, yt, device = self._prepare(X, y)
        gen = self._generator()
        layer = _linear_layer(Xt.shape[1], len(self.classes_), device, gen)
        opt = torch.optim.SGD(layer.parameters(), lr=self.lr, momentum=self.momentum)
        train_minibatches(layer, opt, Xt, yt, self.batch_size, self.epochs, gen)
        self.coef_ = layer.weight.detach().cpu().double().numpy()
        self.intercept_ = layer.bias.detach().cpu().double().numpy()
        return self


class TorchMLPClassifier(_TorchClassifier):
    """One hidden ReLU layer (with dropout), Adam on mini-batches, L2 weight decay."""

    def __init__(self, hidden=512, weight_decay=1e-4, dropout=0.2, epochs=40, batch_size=128, lr=1e-3,
                 device="auto", random_state=0):
        self.hidden = hidden
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.device = device
        self.random_state = random_state

    def fit(self, X, y):
        Xt, yt, device = self._prepare(X, y)
        gen = self._generator()
        net = torch.nn.Sequential(_linear_layer(Xt.shape[1], self.hidden, device, gen), torch.nn.ReLU(),
                                  torch.nn.Dropout(self.dropout),
                                  _linear_layer(self.hidden, len(self.classes_), device, gen))
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        net.train()
        with torch.random.fork_rng(devices=[]):  # dropout draws from the global generator: keep it local
            torch.manual_seed(int(self.random_state or 0))
            train_minibatches(net, opt, Xt, yt, self.batch_size, self.epochs, gen)
        self.w1_, self.b1_, self.w2_, self.b2_ = (p.detach().cpu().double().numpy() for p in
                                                  (net[0].weight, net[0].bias, net[3].weight, net[3].bias))
        return self

    def _scores(self, X):
        h = np.maximum(X @ self.w1_.T + self.b1_, 0)
        return h @ self.w2_.T + self.b2_
