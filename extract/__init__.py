"""Stage one: images become CNN codes, written once into the HDF5 cache."""
from .backbones import BACKBONES, BackboneSpec, Preprocess, get_backbone
from .errors import ExtractError, WeightsUnavailable
from .runner import ExtractConfig, ExtractSummary, run_extract

__all__ = ["BACKBONES", "BackboneSpec", "Preprocess", "get_backbone", "ExtractError",
           "WeightsUnavailable", "ExtractConfig", "ExtractSummary", "run_extract"]
