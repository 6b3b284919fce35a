"""Stage one: images become CNN codes, written once into the HDF5 cache.

Names load on first use, so importing the package (for its error types, say) costs no torch import.
"""
import importlib

from .errors import ExtractError, WeightsUnavailable

_LAZY = {"BACKBONES": "backbones", "BackboneSpec": "backbones", "Preprocess": "backbones",
         "get_backbone": "backbones", "Extractor": "extractor",
         "CodeSpec": "config", "RunOptions": "config", "ExtractConfig": "runner", "ExtractSummary": "runner", "run_extract": "runner"}

__all__ = ["ExtractError", "WeightsUnavailable", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
