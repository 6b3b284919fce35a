"""The network above a cached map: what stage two trains on a cache's unpooled maps.

The second door from stage two into stage one (beside by_fingerprint): stage two names the codes'
backbone, weights and map layer, and gets the network's own top, with the weights the codes were
computed with (pretrained, random:SEED or a --weights FILE, checked by its SHA-256 as predict
checks it), as a module from the flattened map to the final classifier's input.
"""
import torch
from torch import nn

from . import get_backbone
from .base import on_meta_else_cpu
from ..errors import ExtractError
from ..weights import ResolvedWeights, weights_for_identity


class MapTop(nn.Module):
    """Flattened map [B, C*H*W] (as the cache stores it) -> the network's top -> its features."""

    def __init__(self, body: nn.Module, map_shape):
        super().__init__()
        self.unflatten = nn.Unflatten(1, tuple(int(d) for d in map_shape))
        self.body = body

    def forward(self, x):
        return self.body(self.unflatten(x))


def network_top(backbone: str, weights: str, layer: str, map_shape, weights_file=None, pretrained=True):
    """(MapTop, final nn.Linear) of ``backbone`` above the map ``layer``, in eval mode on the CPU.
    pretrained: with the weights named by ``weights`` (the fingerprint's identity); False: the
    architecture only (parameters left uninitialised, for a model file's trained state to fill)."""
    spec = get_backbone(backbone)
    if layer not in spec.maps:
        raise ExtractError(f"{backbone} has no map layer {layer!r}; its map layers: {', '.join(spec.maps) or 'none'}")
    if pretrained and weights.startswith("file:") and not weights_file:
        raise ExtractError(f"the codes came from weights={weights.split()[0][5:]}: training the top on them needs "
                           "that file, which fit does not take yet; extract with the pretrained weights (or random) "
                           "to train the top")
    if pretrained:
        network = spec.weighted_network(weights_for_identity(spec, weights, weights_file))
    else:
        network = on_meta_else_cpu(lambda: spec.network(ResolvedWeights(identity="random:0", seed=0)))
    body, final = spec.top(network.eval(), layer)
    top = MapTop(body, map_shape)
    if not pretrained:
        top, final = top.to_empty(device="cpu"), final.to_empty(device="cpu")
    return top.eval(), final


def state_vector(module: nn.Module) -> "torch.Tensor":
    """Every tensor of a module's state dict, in its order, as one float32 vector (a model file
    stores it as one array)."""
    return torch.cat([t.detach().reshape(-1).float().cpu() for t in module.state_dict().values()])


def load_state_vector(module: nn.Module, vector) -> nn.Module:
    """The reverse of state_vector: the module's state dict filled from the vector, each tensor cast
    back to its own dtype (a batch norm's counter is an integer)."""
    vector, current = torch.as_tensor(vector), module.state_dict()
    total = sum(t.numel() for t in current.values())
    if total != len(vector):
        raise ExtractError(f"a trained top of {len(vector):,} numbers does not fit this network's {total:,}; "
                           "re-create the model file with `cnncodes fit`")
    state, at = {}, 0
    for name, t in current.items():
        state[name] = vector[at:at + t.numel()].reshape(t.shape).to(t.dtype)
        at += t.numel()
    module.load_state_dict(state)
    return module
