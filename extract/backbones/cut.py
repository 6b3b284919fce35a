"""Cutting a network at named layers, for every family: {layer: [B, D]} from one forward.

Two ways, as torchvision's own feature extraction offers: by graph node with FX
(`create_feature_extractor`: only the nodes needed run, and the cut stays traceable, which int8
quantization needs), or by forward hooks on modules where a network cannot be traced. A 4-D
output (a map [B, C, H, W]) is averaged over H and W, a 3-D one (tokens [B, N, D]) over tokens;
a map layer (``maps``: the boundary a network's own top is trained above) keeps its whole map,
flattened C x H x W in row-major order.
"""
import warnings

import torch
from torch import nn


MAP = 0  # the "rank" of a map layer: kept whole, flattened


def pool(t: torch.Tensor, rank: int = None) -> torch.Tensor:
    """A layer's output as codes [B, D]; ``rank`` given (a Python int, known in advance), the choice
    is made without asking the tensor, so FX can trace it."""
    rank = t.dim() if rank is None else rank
    if rank == MAP:
        return t.flatten(1)
    if rank == 4:
        return t.mean(dim=(2, 3))
    if rank == 3:
        return t.mean(dim=1)
    return t if rank == 2 else t.flatten(1)


class NodeCut(nn.Module):
    """network cut at FX graph nodes: {layer: node name}. With the probed ``shapes`` the pooling is
    chosen once here, so the forward has no branch on a tensor's rank (FX cannot trace one)."""

    def __init__(self, network: nn.Module, nodes: dict, shapes: dict = None, maps=()):
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor
        self.layers = tuple(nodes)
        unique = list(dict.fromkeys(nodes.values()))  # a map and its pooled codes read one node
        self.outputs = {layer: f"out{unique.index(node)}" for layer, node in nodes.items()}
        with warnings.catch_warnings():  # "eval nodes are a subsequence of train nodes": we trace eval only
            warnings.simplefilter("ignore", UserWarning)
            self.body = create_feature_extractor(network, return_nodes={node: f"out{i}" for i, node in enumerate(unique)})
        self.ranks = {layer: MAP if layer in maps else len(shape) for layer, shape in shapes.items()} if shapes else None

    def forward(self, x):
        out = self.body(x)
        if self.ranks is None:  # the probe: raw outputs
            return {layer: out[self.outputs[layer]] for layer in self.layers}
        return {layer: pool(out[self.outputs[layer]], self.ranks[layer]) for layer in self.layers}


class HookCut(nn.Module):
    """network cut by forward hooks: ``run(network, x)`` is the trunk's forward, whose output is the
    layer named ``final``; the other layers are modules' outputs ({layer: module name}), pooled as
    they pass (``maps`` flattened; ``raw``, the probe: as they are)."""

    def __init__(self, network: nn.Module, run, layers: tuple, modules: dict, final: str, maps=(), raw=False):
        super().__init__()
        self.network = network
        self.run = run
        self.final = final
        self.layers = tuple(layers)
        self.maps, self.raw = frozenset(maps), raw
        self._kept = {}
        named = dict(network.named_modules())
        for layer in self.layers:
            if layer != final:
                named[modules[layer]].register_forward_hook(self._keeper(layer))

    def _out(self, layer, output):
        """raw (the probe): outputs as they are; else pooled, or a map flattened."""
        return output if self.raw else pool(output, MAP if layer in self.maps else None)

    def _keeper(self, layer):
        def keep(module, inputs, output):
            self._kept[layer] = self._out(layer, output)
        return keep

    def forward(self, x):
        final = self.run(self.network, x)
        kept, self._kept = self._kept, {}
        kept[self.final] = self._out(self.final, final)
        return {layer: kept[layer] for layer in self.layers}
