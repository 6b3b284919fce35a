"""The solver behind the linear heads' sweeps: a whole regularisation grid of multinomial logistic
regressions, fitted at once (the estimators that use it live in sweep.py).

Every head h minimises  mean_i CE(x_i W_h + b_h, y_i) + lambda_h / 2 * ||W_h||^2  (the intercept
is not penalised). With lambda = 1 / (C n) that is exactly scikit-learn's LogisticRegression
objective (C * sum CE + ||W||^2 / 2, divided by C n); with lambda = weight_decay it is the torch
linear layer's. The heads are independent, so they are stacked into one [D, H*K] weight matrix:
one matrix product per step serves all of them, and a batched L-BFGS (one history, step size and
stopping test per head) drives each to its own optimum. Heads are scored on the selection rows,
the best is refitted on every row, warm-started from its own solution. The solver is written
against the array API: numpy arrays on a CPU, torch tensors on a GPU (see solver_device).
"""
import copy
import os

import numpy as np
from array_api_compat import array_namespace, device as device_of, to_device

HISTORY = 10
# The sweep only ranks the heads on the selection rows, so it stops earlier than the refit.
SWEEP_TOL_FACTOR = 10


def solver_device(name="auto"):
    """Where the full-batch solver runs: None for numpy on the CPU, else a torch device.
    auto: the GPU when torch sees one. Without an NVIDIA driver torch is not even imported: its
    import alone is a third of a whole ``fit --classifier logreg`` on 2 cores, and numpy's
    BLAS multiplies these matrices as fast as torch's on the CPUs measured (docs/benchmarks.md)."""
    if name == "cpu" or (name == "auto" and not _nvidia_driver()):
        return None
    from .torch_heads import torch_device
    device = torch_device(name)
    return None if device.type == "cpu" else device


def _nvidia_driver() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def to_numpy(x) -> np.ndarray:
    return np.asarray(to_device(x, "cpu"))


def split_theta(theta, d, k):
    """theta [H, D*K + K] -> W [D, H*K], b [H*K]: every head's weights side by side."""
    xp = array_namespace(theta)
    W = xp.reshape(xp.permute_dims(xp.reshape(theta[:, :d * k], (theta.shape[0], d, k)), (1, 0, 2)), (d, -1))
    return W, xp.reshape(theta[:, d * k:], (-1,))


def heads_correct(theta, X, y, d, k) -> np.ndarray:
    """Per head [H]: how many rows of X [n, D] each head classifies as y [n] (numpy or torch arrays)."""
    xp = array_namespace(theta)
    W, b = split_theta(theta, d, k)
    pred = xp.argmax(xp.reshape(X @ W + b, (X.shape[0], theta.shape[0], k)), axis=2)
    return to_numpy(xp.sum(xp.astype(pred == y[:, None], xp.int64), axis=0))


class _Heads:
    """H stacked linear heads over the same codes: one GEMM computes all their logits, one more
    all their gradients. Written against the array API, so numpy (CPU) and torch (GPU, and the
    streamed minibatches) run the same code."""

    def __init__(self, X, y, n_classes, lambdas):
        xp = self.xp = array_namespace(X)
        self.X, self.k = X, n_classes
        self.onehot = xp.astype(y[:, None] == xp.arange(n_classes, device=device_of(X)), X.dtype)   # [n, K]
        self.lam = lambdas                                   # [H]
        self.h = lambdas.shape[0]
        self.d = X.shape[1]

    def subset(self, idx) -> "_Heads":
        """The same codes with only the heads at ``idx``."""
        sub = copy.copy(self)  # shares the codes and targets, not a copy of them
        sub.lam, sub.h = self.lam[idx], idx.shape[0]
        return sub

    def forward(self, theta):
        """(objective [H], log-probabilities [n, H, K])."""
        xp, n = self.xp, self.X.shape[0]
        W, b = split_theta(theta, self.d, self.k)
        logits = xp.reshape(self.X @ W + b, (n, self.h, self.k))
        shifted = logits - xp.max(logits, axis=2, keepdims=True)
        log_p = shifted - xp.log(xp.sum(xp.exp(shifted), axis=2, keepdims=True))
        ce = -xp.mean(xp.sum(log_p * self.onehot[:, None, :], axis=2), axis=0)         # [H]
        penalty = 0.5 * self.lam * xp.sum(theta[:, :self.d * self.k] ** 2, axis=1)
        return ce + penalty, log_p

    def loss_and_grad(self, theta, forward=None):
        """Per-head objective [H] and its gradient [H, P], written out (no autograd).
        forward: this theta's (loss, log_p) when the line search computed them already."""
        xp, n, h, d, k = self.xp, self.X.shape[0], self.h, self.d, self.k
        loss, log_p = forward if forward is not None else self.forward(theta)
        residual = (xp.exp(log_p) - self.onehot[:, None, :]) / n                          # [n, H, K]
        # residual.T @ X reads X row by row as stored: as fast as X.T @ residual from a transposed
        # copy of X (docs/benchmarks.md), without the copy.
        grad_w = xp.permute_dims(xp.reshape(xp.reshape(residual, (n, h * k)).T @ self.X, (h, k, d)), (0, 2, 1))
        grad_w = grad_w + self.lam[:, None, None] * xp.reshape(theta[:, :d * k], (h, d, k))
        grad_b = xp.sum(residual, axis=0)                                                  # [H, K]
        return loss, xp.concat([xp.reshape(grad_w, (h, d * k)), grad_b], axis=1)


def batched_lbfgs(heads: _Heads, theta, max_iter=1000, tol=1e-4):
    """Minimise every head's objective; returns (theta [H, P], iterations run per head [H], numpy).

    Each head has its own history, step and stopping test; only heads still running are
    computed (a converged head drops out of the matrix products).
    """
    xp, dev = heads.xp, device_of(theta)
    f, g = heads.loss_and_grad(theta)
    S, Y, rho = [], [], []   # full-size [H, P] (rho [H]); zero where a head skipped a pair
    active = xp.max(xp.abs(g), axis=1) > tol
    iterations = np.zeros(heads.h, dtype=np.int64)
    for _ in range(max_iter):
        idx = xp.nonzero(active)[0]
        if not idx.shape[0]:
            break
        sub = heads.subset(idx)
        th, gi, fi = theta[idx], g[idx], f[idx]
        q = xp.asarray(gi, copy=True)
        g_norm = xp.clip(xp.linalg.vector_norm(gi, axis=1, keepdims=True), min=1e-12)   # [h, 1]
        alphas = []
        for s, yv, r in zip(reversed(S), reversed(Y), reversed(rho)):   # two-loop recursion
            a = r[idx] * xp.sum(s[idx] * q, axis=1)
            q -= a[:, None] * yv[idx]
            alphas.append(a)
        if S:
            sl, yl = S[-1][idx], Y[-1][idx]
            gamma = xp.sum(sl * yl, axis=1) / xp.clip(xp.sum(yl * yl, axis=1), min=1e-20)
            gamma = xp.where(gamma > 0, gamma, 1.0 / g_norm[:, 0])
            q *= gamma[:, None]
        else:
            q /= g_norm   # a unit first step
        for s, yv, r, a in zip(S, Y, rho, reversed(alphas)):
            beta = r[idx] * xp.sum(yv[idx] * q, axis=1)
            q += s[idx] * (a - beta)[:, None]
        direction = -q
        slope = xp.sum(gi * direction, axis=1)
        bad = slope >= 0  # not a descent direction: the gradient instead
        if xp.any(bad):
            direction = xp.where(bad[:, None], -gi / g_norm, direction)
            slope = xp.sum(gi * direction, axis=1)
        step = xp.ones(idx.shape[0], dtype=theta.dtype, device=dev)
        accepted = None  # the forward pass at the accepted point, reused for its gradient
        for _ in range(30):  # backtracking (Armijo), all running heads at once
            trial = sub.forward(th + step[:, None] * direction)
            ok = trial[0] <= fi + 1e-4 * step * slope
            if xp.all(ok):
                accepted = trial
                break
            step = xp.where(ok, step, step * 0.5)
        new_th = th + step[:, None] * direction
        new_f, new_g = sub.loss_and_grad(new_th, accepted)
        s_new, y_new = new_th - th, new_g - gi
        sy = xp.sum(s_new * y_new, axis=1)
        keep = sy > 1e-10  # a pair that breaks positive curvature is left out
        for store, value in ((S, s_new * xp.astype(keep[:, None], theta.dtype)),
                             (Y, y_new * xp.astype(keep[:, None], theta.dtype))):
            full = xp.zeros_like(theta)
            full[idx] = value
            store.append(full)
        r_full = xp.zeros(heads.h, dtype=theta.dtype, device=dev)
        r_full[idx] = xp.where(keep, 1.0 / xp.clip(sy, min=1e-20), xp.zeros_like(sy))
        rho.append(r_full)
        if len(S) > HISTORY:
            S.pop(0), Y.pop(0), rho.pop(0)
        theta[idx], f[idx], g[idx] = new_th, new_f, new_g
        iterations[to_numpy(idx)] += 1
        # Stop a head when its gradient is flat (scikit-learn's lbfgs test, on the same objective)
        # or its objective no longer moves in float32.
        # As scipy's ftol test, relative to max(|f|, 1), at float32's resolution.
        scale = xp.clip(xp.maximum(xp.abs(fi), xp.abs(new_f)), min=1.0)
        done = (xp.max(xp.abs(new_g), axis=1) <= tol) | (xp.abs(fi - new_f) <= 1e-7 * scale)
        active[idx[done]] = False
    return theta, iterations


# Streaming (codes beyond the memory budget): Adam on minibatches, every head at once. At least
# STREAM_MIN_STEPS steps however few rows there are; the learning rate decays to zero (cosine).
STREAM_EPOCHS = 2
STREAM_MIN_STEPS = 400
STREAM_BATCH = 1024
STREAM_LR = 1e-3


def adam_heads(epoch, n_rows, k, lambdas, theta, lr=STREAM_LR, batch_size=STREAM_BATCH):
    """Minimise every head's objective over minibatches with torch's Adam (elementwise, so the
    stacked heads stay independent): ``epoch(e)`` yields (X [b, D], y [b]) as numpy arrays, a
    fresh shuffle per epoch; the penalty uses ``lambdas`` as they are (the full objective's, so
    each minibatch gradient is an unbiased estimate of the full one). Returns (theta, steps run)."""
    per_epoch = max(1, -(-n_rows // batch_size))
    epochs = max(STREAM_EPOCHS, -(-STREAM_MIN_STEPS // per_epoch))
    total = epochs * per_epoch
    import torch
    theta = theta.clone()
    optimizer = torch.optim.Adam([theta], lr=lr)
    # The rate of update t (from 1) is lr * (1 + cos(pi * t / total)) / 2, down to zero.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda done: 0.5 * (1 + np.cos(np.pi * min((done + 1) / total, 1.0))))
    step = 0
    for e in range(epochs):
        for X, y in epoch(e):
            X = torch.as_tensor(X, device=theta.device)
            y = torch.as_tensor(y, dtype=torch.long, device=theta.device)
            _, theta.grad = _Heads(X, y, k, lambdas).loss_and_grad(theta)
            optimizer.step()
            schedule.step()
            step += 1
    return theta.detach(), step
