"""Cutting a network at named layers, for every family: {layer: [B, D]} from one forward.

Two ways, as torchvision's own feature extraction offers: by graph node with FX
(`create_feature_extractor`: only the nodes needed run, and the cut stays traceable, which int8
quantization needs), or by forward hooks on modules where a network cannot be traced. A 4-D
output (a map [B, C, H, W]) is averaged over H and W, a 3-D one (tokens [B, N, D]) over tokens.
"""
import warnings

import torch
from torch import nn


def pool(t: torch.Tensor, rank: int = None) -> torch.Tensor:
    """A layer's output as codes [B, D]; ``rank`` given (a Python int, known in advance), the choice
    is made without asking the tensor, so FX can trace it."""
    rank = t.dim() if rank is None else rank
    if rank == 4:
        return t.mean(dim=(2, 3))
    if rank == 3:
        return t.mean(dim=1)
    return t if rank == 2 else t.flatten(1)


class NodeCut(nn.Module):
    """network cut at FX graph nodes: {layer: node name}. With the probed ``shapes`` the pooling is
    chosen once here, so the forward has no branch on a tensor's rank (FX cannot trace one)."""

    def __init__(self, network: nn.Module, nodes: dict, shapes: dict = None):
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor
        self.layers = tuple(nodes)
        with warnings.catch_warnings():  # "eval nodes are a subsequence of train nodes": we trace eval only
            warnings.simplefilter("ignore", UserWarning)
            self.body = create_feature_extractor(network, return_nodes={node: layer for layer, node in nodes.items()})
        self.ranks = {layer: len(shape) for layer, shape in shapes.items()} if shapes else None

    def forward(self, x):
        out = self.body(x)
        if self.ranks is None:  # the probe: raw outputs
            return out
        return {layer: pool(out[layer], self.ranks[layer]) for layer in self.layers}


class HookCut(nn.Module):
    """network cut by forward hooks: ``run(network, x)`` is the trunk's forward, whose output is the
    layer named ``final``; the other layers are modules' outputs ({layer: module name}), pooled as
    they pass."""

    def __init__(self, network: nn.Module, run, layers: tuple, modules: dict, final: str):
        super().__init__()
        self.network = network
        self.run = run
        self.final = final
        self.layers = tuple(layers)
        self._kept = {}
        named = dict(network.named_modules())
        for layer in self.layers:
            if layer != final:
                named[modules[layer]].register_forward_hook(self._keeper(layer))

    def _keeper(self, layer):
        def keep(module, inputs, output):
            self._kept[layer] = pool(output)
        return keep

    def forward(self, x):
        final = self.run(self.network, x)
        kept, self._kept = self._kept, {}
        kept[self.final] = pool(final)
        return {layer: kept[layer] for layer in self.layers}
