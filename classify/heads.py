"""Classifiers of our own, written as scikit-learn estimators (fit/predict/predict_proba).

Every estimator here keeps its fitted state in plain arrays (``coef_``/``intercept_``, or the
MLP's ``w1_``...``b2_``), which model_file stores, so a model file never needs pickle. ``__init__`` only stores parameters, as scikit-learn requires.
"""
import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import RidgeClassifier
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted


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
    pass


class NearestCentroidClassifier(ClassifierMixin, BaseEstimator):
    """Nearest class mean (Euclidean). Linear in disguise: argmin |x-c|^2 = argmax 2x.c - |c|^2."""

    def fit(self, X, y):
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        X = np.asarray(X, dtype=np.float64)
        self.centroids_ = np.stack([X[y_idx == k].mean(axis=0) for k in range(len(self.classes_))])
        self.coef_ = 2 * self.centroids_
        self.intercept_ = -(self.centroids_ ** 2).sum(axis=1)
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X):
        check_is_fitted(self)
        return np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_

    def predict_proba(self, X):
        return softmax(self.decision_function(X))

    def predict(self, X):
        return self.classes_[self.decision_function(X).argmax(axis=1)]


def torch_device(name="auto"):
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


class _TorchClassifier(ClassifierMixin, BaseEstimator):
    """Shared fit plumbing: label encoding, tensors on the device, seeding."""

    def _prepare(self, X, y):
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        self.n_features_in_ = X.shape[1]
        device = torch_device(self.device)
        torch.manual_seed(self.random_state)
        Xt = torch.as_tensor(np.asarray(X, dtype=np.float32), device=device)
        yt = torch.as_tensor(y_idx, dtype=torch.long, device=device)
        return Xt, yt, device

    def predict_proba(self, X):
        return softmax(self.decision_function(X))

    def predict(self, X):
        return self.classes_[self.decision_function(X).argmax(axis=1)]


def train_minibatches(net, opt, Xt, yt, batch_size, epochs, seed):
    """Shuffled mini-batch cross-entropy training, seeded (shared by the seed recipe and the MLP)."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(Xt), generator=gen).split(batch_size):
            idx = idx.to(Xt.device)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx]).backward()
            opt.step()


class TorchLinearClassifier(_TorchClassifier):
    """A torch linear layer trained full-batch with L-BFGS on cross-entropy + L2 weight decay.

    X: float [n, D]; y: [n] labels. coef_ [C, D], intercept_ [C] after fit.
    """

    def __init__(self, weight_decay=1e-4, max_iter=300, device="auto", random_state=0):
        self.weight_decay = weight_decay
        self.max_iter = max_iter
        self.device = device
        self.random_state = random_state

    def fit(self, X, y):
        Xt, yt, device = self._prepare(X, y)
        layer = torch.nn.Linear(Xt.shape[1], len(self.classes_)).to(device)
        opt = torch.optim.LBFGS(layer.parameters(), lr=1, max_iter=self.max_iter, history_size=20,
                                tolerance_grad=1e-6, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(layer(Xt), yt)
            loss = loss + 0.5 * self.weight_decay * layer.weight.pow(2).sum()
            loss.backward()
            return loss
        opt.step(closure)
        self.coef_ = layer.weight.detach().cpu().double().numpy()
        self.intercept_ = layer.bias.detach().cpu().double().numpy()
        return self

    def decision_function(self, X):
        check_is_fitted(self)
        return np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_


class SeedRecipeClassifier(TorchLinearClassifier):
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
        layer = torch.nn.Linear(Xt.shape[1], len(self.classes_)).to(device)
        opt = torch.optim.SGD(layer.parameters(), lr=self.lr, momentum=self.momentum)
        train_minibatches(layer, opt, Xt, yt, self.batch_size, self.epochs, self.random_state)
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
        net = torch.nn.Sequential(torch.nn.Linear(Xt.shape[1], self.hidden), torch.nn.ReLU(),
                                  torch.nn.Dropout(self.dropout), torch.nn.Linear(self.hidden, len(self.classes_)))
        net = net.to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        net.train()
        train_minibatches(net, opt, Xt, yt, self.batch_size, self.epochs, self.random_state)
        self.w1_, self.b1_, self.w2_, self.b2_ = (p.detach().cpu().double().numpy() for p in
                                                  (net[0].weight, net[0].bias, net[3].weight, net[3].bias))
        return self

    def decision_function(self, X):
        check_is_fitted(self)
        h = np.maximum(np.asarray(X, dtype=np.float64) @ self.w1_.T + self.b1_, 0)
        return h @ self.w2_.T + self.b2_
