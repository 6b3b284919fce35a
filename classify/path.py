"""A whole regularisation grid of multinomial logistic regressions, fitted at once.

Every head h minimises  mean_i CE(x_i W_h + b_h, y_i) + lambda_h / 2 * ||W_h||^2  (the intercept
is not penalised). With lambda = 1 / (C n) that is exactly scikit-learn's LogisticRegression
objective (C * sum CE + ||W||^2 / 2, divided by C n); with lambda = weight_decay it is the torch
linear layer's. The heads are independent, so they are stacked into one [D, H*K] weight matrix:
one matrix product per step serves all of them, and a batched L-BFGS (one history, step size and
stopping test per head) drives each to its own optimum. Heads are scored on the selection rows,
the best is refitted on every row, warm-started from its own solution.
"""
import numpy as np
import torch

from .heads import LinearScores, _TorchClassifier, torch_device

HISTORY = 10
# Warm-start stages along the regularisation path. Measured on flowers5 VGG16 fc7 codes: one
# batched solve of all 11 heads (5.8 s) beat three stages each warm-started from the previous
# one (7.9 s), because a stage waits for its slowest head; the refit is warm-started instead.
STAGES = 1
# The sweep only ranks the heads on the selection rows, so it stops earlier than the refit.
SWEEP_TOL_FACTOR = 10


def split_theta(theta, d, k):
    """theta [H, D*K + K] -> W [D, H*K], b [H*K]: every head's weights side by side."""
    W = theta[:, :d * k].reshape(len(theta), d, k).permute(1, 0, 2).reshape(d, -1)
    return W, theta[:, d * k:].reshape(-1)


def heads_correct(theta, X, y, d, k):
    """Per head [H]: how many rows of X (torch [n, D]) each head classifies as y (torch [n])."""
    W, b = split_theta(theta, d, k)
    with torch.no_grad():
        pred = torch.addmm(b, X, W).reshape(len(X), len(theta), k).argmax(2)
        return (pred == y[:, None]).sum(0).cpu()


class _Heads:
    """H stacked linear heads over the same codes: one GEMM computes all their logits, one more
    all their gradients."""

    def __init__(self, X, y, n_classes, lambdas, transposed_copy=True):
        self.X, self.k = X, n_classes
        # The gradient's product reads X by columns: a full-batch solve keeps a copy laid out for
        # it; a minibatch, used once, does not pay for the copy.
        self.XT = X.T.contiguous() if transposed_copy else X.T
        self.onehot = torch.nn.functional.one_hot(y, n_classes).to(X.dtype)   # [n, K]
        self.lam = lambdas                                   # [H]
        self.h = len(lambdas)
        self.d = X.shape[1]

    def subset(self, idx) -> "_Heads":
        """The same codes with only the heads at ``idx``."""
        sub = object.__new__(_Heads)
        sub.__dict__.update(self.__dict__, lam=self.lam[idx], h=len(idx))
        return sub

    def _forward(self, theta):
        W, b = split_theta(theta, self.d, self.k)
        logits = torch.addmm(b, self.X, W).reshape(len(self.X), self.h, self.k)
        log_p = torch.log_softmax(logits, dim=2)
        ce = -(log_p * self.onehot[:, None, :]).sum(2).mean(0)           # [H]
        penalty = 0.5 * self.lam * theta[:, :self.d * self.k].pow(2).sum(1)
        return ce + penalty, log_p

    def forward(self, theta):
        """(objective [H], log-probabilities [n, H, K])."""
        with torch.no_grad():
            return self._forward(theta)

    def loss_and_grad(self, theta, forward=None):
        """Per-head objective [H] and its gradient [H, P], written out (no autograd).
        forward: this theta's (loss, log_p) when the line search computed them already."""
        with torch.no_grad():
            loss, log_p = forward if forward is not None else self._forward(theta)
            residual = (log_p.exp() - self.onehot[:, None, :]) / len(self.X)   # [n, H, K]
            grad_w = (self.XT @ residual.reshape(len(self.X), -1)).reshape(self.d, self.h, self.k).permute(1, 0, 2)
            grad_w = grad_w + self.lam[:, None, None] * theta[:, :self.d * self.k].reshape(self.h, self.d, self.k)
            grad_b = residual.sum(0)                                             # [H, K]
            return loss, torch.cat([grad_w.reshape(self.h, -1), grad_b], dim=1)


def batched_lbfgs(heads: _Heads, theta, max_iter=1000, tol=1e-4):
    """Minimise every head's objective; returns (theta [H, P], iterations run per head [H]).

    Each head has its own history, step and stopping test; only heads still running are
    computed (a converged head drops out of the matrix products).
    """
    f, g = heads.loss_and_grad(theta)
    S, Y, rho = [], [], []   # full-size [H, P] (rho [H]); zero where a head skipped a pair
    active = g.abs().amax(1) > tol
    iterations = torch.zeros(heads.h, dtype=torch.long)
    for _ in range(max_iter):
        idx = active.nonzero().squeeze(1)
        if not len(idx):
            break
        sub = heads.subset(idx)
        th, gi, fi = theta[idx], g[idx], f[idx]
        q = gi.clone()
        alphas = []
        for s, yv, r in zip(reversed(S), reversed(Y), reversed(rho)):   # two-loop recursion
            a = r[idx] * (s[idx] * q).sum(1)
            q -= a[:, None] * yv[idx]
            alphas.append(a)
        if S:
            sl, yl = S[-1][idx], Y[-1][idx]
            gamma = (sl * yl).sum(1) / (yl * yl).sum(1).clamp_min(1e-20)
            gamma = torch.where(gamma > 0, gamma, 1.0 / gi.norm(dim=1).clamp_min(1e-12))
            q *= gamma[:, None]
        else:
            q /= gi.norm(dim=1, keepdim=True).clamp_min(1e-12)   # a unit first step
        for s, yv, r, a in zip(S, Y, rho, reversed(alphas)):
            beta = r[idx] * (yv[idx] * q).sum(1)
            q += s[idx] * (a - beta)[:, None]
        direction = -q
        slope = (gi * direction).sum(1)
        bad = slope >= 0  # not a descent direction: the gradient instead
        if bad.any():
            direction[bad] = -gi[bad] / gi[bad].norm(dim=1, keepdim=True).clamp_min(1e-12)
            slope = (gi * direction).sum(1)
        step = torch.ones(len(idx), dtype=theta.dtype, device=theta.device)
        accepted = None  # the forward pass at the accepted point, reused for its gradient
        for _ in range(30):  # backtracking (Armijo), all running heads at once
            trial = sub.forward(th + step[:, None] * direction)
            ok = trial[0] <= fi + 1e-4 * step * slope
            if ok.all():
                accepted = trial
                break
            step = torch.where(ok, step, step * 0.5)
        new_th = th + step[:, None] * direction
        new_f, new_g = sub.loss_and_grad(new_th, accepted)
        s_new, y_new = new_th - th, new_g - gi
        sy = (s_new * y_new).sum(1)
        keep = sy > 1e-10  # a pair that breaks positive curvature is left out
        for store, value in ((S, s_new * keep[:, None]), (Y, y_new * keep[:, None])):
            full = torch.zeros_like(theta)
            full[idx] = value
            store.append(full)
        r_full = torch.zeros(heads.h, dtype=theta.dtype, device=theta.device)
        r_full[idx] = torch.where(keep, 1.0 / sy.clamp_min(1e-20), torch.zeros_like(sy))
        rho.append(r_full)
        if len(S) > HISTORY:
            S.pop(0), Y.pop(0), rho.pop(0)
        theta[idx], f[idx], g[idx] = new_th, new_f, new_g
        iterations[idx.cpu()] += 1
        # Stop a head when its gradient is flat (scikit-learn's lbfgs test, on the same objective)
        # or its objective no longer moves in float32.
        # As scipy's ftol test, relative to max(|f|, 1), at float32's resolution.
        scale = torch.maximum(fi.abs(), new_f.abs()).clamp_min(1.0)
        done = (new_g.abs().amax(1) <= tol) | ((fi - new_f).abs() <= 1e-7 * scale)
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
            _, theta.grad = _Heads(X, y, k, lambdas, transposed_copy=False).loss_and_grad(theta)
            optimizer.step()
            schedule.step()
            step += 1
    return theta.detach(), step


class LogisticPathClassifier(LinearScores, _TorchClassifier):
    """Multinomial logistic regression over a grid of regularisation strengths, fitted together.

    param: "C" (scikit-learn's inverse strength; lambda = 1 / (C n)) or "weight_decay" (lambda
    itself). grid: the values. fit(X [n, D], y [n], selection=bool mask [n] or None,
    sweep_train=bool mask or None): the heads train on the ``sweep_train`` rows (default: those
    outside ``selection``) and are scored on ``selection``; the best value is refitted on all rows.
    Without a selection mask the single value ``grid[0]`` is fitted (no sweep).
    After fit: coef_ [K, D], intercept_ [K], best_params_, sweep_ [(params, selection accuracy)].
    """

    def __init__(self, param="C", grid=(1.0,), max_iter=1000, tol=1e-4, device="auto", random_state=0):
        self.param = param
        self.grid = grid
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.random_state = random_state

    def _lambdas(self, values, n):
        values = torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=torch.float32)
        return 1.0 / (values * n) if self.param == "C" else values

    def _solve(self, X, y, values, init=None, tol=None):
        """theta [H, P] for each value, in the order given. Heads go from the strongest
        regularisation to the weakest in a few stages; each stage is one batched solve,
        warm-started from the previous stage's weakest head (the weak heads converge slowly
        from zero, quickly from a neighbour on the path)."""
        lambdas = self._lambdas(values, len(X)).to(X.device)
        order = torch.argsort(lambdas, descending=True)
        p = X.shape[1] * len(self.classes_) + len(self.classes_)
        theta = torch.zeros(len(values), p, device=X.device)
        iterations = torch.zeros(len(values), dtype=torch.long)
        start = init.reshape(1, p).to(X.device) if init is not None else torch.zeros(1, p, device=X.device)
        for stage in torch.tensor_split(order, min(STAGES, len(order))):
            heads = _Heads(X, y, len(self.classes_), lambdas[stage])
            solved, its = batched_lbfgs(heads, start.expand(len(stage), p).clone(), self.max_iter, tol or self.tol)
            theta[stage], iterations[stage.cpu()] = solved, its
            start = solved[-1:]
        return theta, _Heads(X, y, len(self.classes_), lambdas), iterations

    def _check_param(self):
        if self.param not in ("C", "weight_decay"):
            raise ValueError(f"param={self.param!r}: choose 'C' or 'weight_decay'")

    def _keep_solution(self, theta, d, chosen, iterations):
        """The fitted head (theta [1, P]) as scikit-learn's attributes."""
        k = len(self.classes_)
        self.n_iter_ = int(iterations)
        self.coef_ = theta[0, :d * k].reshape(d, k).T.detach().cpu().double().numpy()
        self.intercept_ = theta[0, d * k:].detach().cpu().double().numpy()
        self.best_params_ = {self.param: chosen}
        return self

    def fit(self, X, y, selection=None, sweep_train=None):
        self._check_param()
        Xt, yt, device = self._prepare(X, y)
        grid = [float(v) for v in np.atleast_1d(self.grid)]
        chosen, init = grid[0], None
        self.sweep_ = []
        if selection is not None and len(grid) > 1:
            selection = np.asarray(selection, dtype=bool)
            sweep_train = ~selection if sweep_train is None else np.asarray(sweep_train, dtype=bool) & ~selection
            train = torch.as_tensor(sweep_train, device=device)
            held = torch.as_tensor(selection, device=device)
            if len(selection) != len(yt):
                raise ValueError(f"selection has {len(selection)} entries for {len(yt)} rows")
            if not held.any() or len(torch.unique(yt[train])) < len(self.classes_):
                raise ValueError("the selection rows leave a class with no training rows")
            theta, heads, _ = self._solve(Xt[train], yt[train], grid, tol=self.tol * SWEEP_TOL_FACTOR)
            accuracy = (heads_correct(theta, Xt[held], yt[held], heads.d, heads.k).float() / int(held.sum())).numpy()
            self.sweep_ = [({self.param: v}, float(a)) for v, a in zip(grid, accuracy)]
            best = int(np.argmax(accuracy))  # the first best: the strongest regularisation among ties
            chosen, init = grid[best], theta[best:best + 1]
        theta, heads, iterations = self._solve(Xt, yt, [chosen], init)
        return self._keep_solution(theta, heads.d, chosen, iterations[0])

    def fit_stream(self, train, n_train, classes, n_features, select=None, refit=None, n_refit=None):
        """The same sweep and refit for codes that do not fit in memory, by minibatch Adam.
        train(epoch) / refit(epoch): minibatches (X float32 [b, D], y class indices [b]) of the
        sweep's training rows / of every row, reshuffled per epoch; select(): the selection rows'
        minibatches. Without ``select``, grid[0] is fitted on ``train`` (no sweep)."""
        self._check_param()
        self.classes_, self.n_features_in_ = np.asarray(classes), int(n_features)
        device, k = torch_device(self.device), len(classes)
        grid = [float(v) for v in np.atleast_1d(self.grid)]
        p = n_features * k + k
        chosen, init, self.sweep_ = grid[0], torch.zeros(1, p, device=device), []
        if select is not None and len(grid) > 1:
            lambdas = self._lambdas(grid, n_train).to(device)
            theta, _ = adam_heads(train, n_train, k, lambdas, torch.zeros(len(grid), p, device=device))
            correct, seen = torch.zeros(len(grid), dtype=torch.long), 0
            for X, y in select():
                correct += heads_correct(theta, torch.as_tensor(X, device=device),
                                         torch.as_tensor(y, dtype=torch.long, device=device), n_features, k)
                seen += len(y)
            accuracy = (correct.float() / max(seen, 1)).numpy()
            self.sweep_ = [({self.param: v}, float(a)) for v, a in zip(grid, accuracy)]
            best = int(np.argmax(accuracy))
            chosen, init = grid[best], theta[best:best + 1].clone()
            train, n_train = refit, n_refit
        theta, steps = adam_heads(train, n_train, k, self._lambdas([chosen], n_train).to(device), init)
        return self._keep_solution(theta, n_features, chosen, steps)
