"""The network's own top, trained on cached maps: the transfer-learning cases a head on codes
cannot reach, each epoch costing only the trainable layers.

VGG16's pool5 map -> fc6, fc7 (from the pretrained weights) and a new fc8, with VGG's dropout;
EfficientNet-Lite's stage-7 map -> its head convolution, batch norm, pool and a new classifier.
Batch norms keep their pretrained statistics (eval mode) while their scale and shift train: the
batches here are too small to re-estimate them. The trained top's whole state is one float32
array (``state_``), so a model file stores it as it stores any head, without pickle.
"""
import numpy as np
import torch

from .torch_heads import _linear_layer, _TorchClassifier, train_minibatches

RECIPES = ("adamw", "seed")
PREDICT_BATCH = 256


def _keep_norms_frozen(net):
    """Batch norms in eval mode while the rest trains (dropout on)."""
    net.train()
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


class NetworkTopClassifier(_TorchClassifier):
    """The backbone's top above the map ``layer``, initialised from the weights the codes came from,
    with a new final classifier, trained on the maps.

    recipe "adamw": AdamW with a cosine schedule (warm-up-free), ``epochs`` passes, mini-batches of
    ``batch_size``; "seed": the classic exercise exactly (SGD lr 0.001, momentum 0.9, batch 20,
    2 epochs, no schedule)."""
    SCORE_BLOCK_BYTES = None  # its rows go to the network in batches of PREDICT_BATCH, as they always have

    def __init__(self, backbone="", weights="", layer="", map_shape=(), recipe="adamw", lr=3e-4, weight_decay=1e-4,
                 epochs=8, batch_size=32, device="auto", random_state=0):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.map_shape = map_shape
        self.recipe = recipe
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state

    def _network(self, pretrained):
        from ...extract.backbones.network_top import network_top
        return network_top(self.backbone, self.weights, self.layer, self.map_shape, pretrained=pretrained)

    def _schedule(self):
        """(batch size, epochs) of the recipe."""
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe {self.recipe!r}: choose {', '.join(RECIPES)}")
        return (20, 2) if self.recipe == "seed" else (self.batch_size, self.epochs)

    def _optimizer(self, net, steps):
        """(optimizer, per-step learning-rate schedule or None)."""
        if self.recipe == "seed":
            return torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9), None
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))

    def _check_width(self, width):
        """The top takes one map of a fixed shape; anything else is a plain error, as a width that
        differs from fit's is for any scikit-learn estimator."""
        expected = int(np.prod(self.map_shape)) if len(self.map_shape) else 0
        if width != expected:
            raise ValueError(f"X has {width} features, but {self.backbone}'s {self.layer or 'map'} top takes maps of "
                             f"shape {tuple(self.map_shape)} ({expected} values a row): fit it on that layer's codes")

    def fit(self, X, y):
        Xt, yt, device = self._prepare(X, y)
        self._check_width(Xt.shape[1])
        gen = self._generator()
        top, final = self._network(pretrained=True)
        net = torch.nn.Sequential(top, _linear_layer(final.in_features, len(self.classes_), "cpu", gen)).to(device)
        batch, epochs = self._schedule()
        opt, schedule = self._optimizer(net, epochs * -(-len(Xt) // batch))
        _keep_norms_frozen(net)
        with torch.random.fork_rng(devices=[]):  # dropout draws from the global generator: keep it local
            torch.manual_seed(int(self.random_state or 0))
            train_minibatches(net, opt, Xt, yt, batch, epochs, gen, schedule)
        from ...extract.backbones.network_top import state_vector
        self.state_ = state_vector(net).numpy()
        self._net = net.eval()
        return self

    def _trained(self):
        """The trained top as a module (rebuilt from ``state_`` after a model file loads)."""
        if getattr(self, "_net", None) is None:
            from ...extract.backbones.network_top import load_state_vector
            top, final = self._network(pretrained=False)
            net = torch.nn.Sequential(top, torch.nn.Linear(final.in_features, len(self.classes_)))
            self._net = load_state_vector(net, self.state_).eval()
        return self._net

    def _scores(self, X):
        self._check_width(X.shape[1])
        net = self._trained()
        device = next(net.parameters()).device  # where it was trained, or the CPU after a model file loads
        out = []
        with torch.no_grad():
            for start in range(0, len(X), PREDICT_BATCH):
                part = torch.as_tensor(np.asarray(X[start:start + PREDICT_BATCH], dtype=np.float32), device=device)
                out.append(net(part).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)))
