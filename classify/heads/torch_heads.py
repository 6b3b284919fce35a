"""Our heads trained with torch (the classic recipe's layer, the MLP), and the device rule they share.

Kept apart from heads.py so that the heads which need no torch never pay for importing it.
"""
import numpy as np
import torch

from .linear import LinearScores, ScoresClassifier


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


def train_minibatches(net, opt, Xt, yt, batch_size, epochs, gen, schedule=None):
    """Shuffled mini-batch cross-entropy training, seeded (shared by the seed recipe, the MLP and
    the network top); ``schedule``: a learning-rate scheduler stepped after every batch."""
    for _ in range(epochs):
        for idx in torch.randperm(len(Xt), generator=gen).split(batch_size):
            idx = idx.to(Xt.device)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx]).backward()
            opt.step()
            if schedule is not None:
                schedule.step()


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
