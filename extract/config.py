"""The whole vocabulary of stage one, in two frozen dataclasses: *what* codes (`CodeSpec`) and
*how* to run (`RunOptions`). Each option is a field of exactly one of them, with its default
there; both check their values when made, and the command line fills them from its parsed
arguments by field name. Importing this module costs no torch import.
"""
from dataclasses import dataclass, fields

from .decoding import DEFAULT_MAX_PIXELS
from .errors import ExtractError
from .options import (DECODERS, DEFAULT_BACKBONE, DEFAULT_CALIBRATION_IMAGES, DEFAULT_INT8_ENGINE, DEFAULT_SHARD_ROWS, DTYPES,
                      ENGINE_NAMES, INT8_ENGINES, PRECISIONS, RUNTIMES)
from .sources import DEFAULT_SPLIT_FRACTIONS


# Layers not named: the backbone's default layers (extract/backbones/base.py, BackboneSpec.defaults).
DEFAULT_LAYERS = ()


class _FromArgs:
    @classmethod
    def from_args(cls, args, **overrides):
        """From an argparse namespace: every field the namespace has a value for (None keeps the default)."""
        given = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
        return cls(**{**given, **overrides})

    @classmethod
    def field_names(cls) -> set:
        return {f.name for f in fields(cls)}


@dataclass(frozen=True)
class CodeSpec(_FromArgs):
    """What codes: everything that decides their values, so everything the fingerprint records
    (with the resolved weights and the backbone's preprocessing, extract/extractor.py)."""
    backbone: str = DEFAULT_BACKBONE
    layers: tuple = DEFAULT_LAYERS      # any form layer_names reads
    weights: str = None                 # None = pretrained; random[:SEED]; a FILE
    dtype: str = DTYPES[0]              # how codes are stored
    precision: str = "auto"             # compute precision (auto: extract/device.py)
    runtime: str = RUNTIMES[0]          # torch, or onnxruntime (fp32 on the CPU): recorded as the precision
    crop_size: int = None               # None = the weights' own input size
    jpeg_draft: bool = False
    decoder: str = DECODERS[0]
    views: int = 0                      # augmented views per train image (extract/views.py)
    split_seed: int = 0
    split_fractions: tuple = DEFAULT_SPLIT_FRACTIONS
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES  # int8 only, first run only
    int8_engine: str = DEFAULT_INT8_ENGINE                # int8 only, first run only

    def __post_init__(self):
        object.__setattr__(self, "layers", layer_names(self.layers))
        object.__setattr__(self, "split_fractions", tuple(self.split_fractions))
        _choice("dtype", self.dtype, DTYPES)
        _choice("decoder", self.decoder, DECODERS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("int8_engine", self.int8_engine, INT8_ENGINES)
        _choice("runtime", self.runtime, RUNTIMES)
        if self.runtime == "onnxruntime" and self.precision not in ("auto", "fp32"):
            raise ExtractError(f"runtime=onnxruntime computes in fp32; drop precision={self.precision} "
                               "(or use runtime=torch for it)")
        if self.views < 0:
            raise ExtractError(f"views={self.views}: give 0 (centre views only) or more")
        if self.views and self.decoder != "pil":
            raise ExtractError("views= draws its crops from PIL images: use it with decoder=pil")
        if self.jpeg_draft and self.decoder != "pil":
            raise ExtractError("jpeg_draft=True works with decoder=pil only (torchvision decodes at full size)")
        if self.crop_size is not None and self.crop_size < 1:
            raise ExtractError(f"crop_size={self.crop_size}: give a positive number of pixels")
        if self.precision == "int8" and self.calibration_images < 1:
            raise ExtractError(f"calibration_images={self.calibration_images}: int8 needs at least 1 "
                               f"(default {DEFAULT_CALIBRATION_IMAGES})")

    @property
    def split_policy(self) -> dict:
        return {"seed": self.split_seed, "fractions": list(self.split_fractions)}


@dataclass(frozen=True)
class RunOptions(_FromArgs):
    """How to run: never part of the fingerprint (a resumed run may change any of these)."""
    device: str = "auto"
    batch_size: int = None              # None = the device's default (extract/device.py)
    workers: int = None
    channels_last: bool = True
    compile: bool = False               # torch.compile the network (pays off on long GPU runs)
    max_pixels: int = DEFAULT_MAX_PIXELS
    engine: str = ENGINE_NAMES[0]       # or "ray" (extract/engines/ray.py)
    ray_address: str = None             # --engine ray: a running cluster; None starts a local Ray
    shard_rows: int = DEFAULT_SHARD_ROWS
    rehash: bool = False                # read and hash every file, not only those whose stat changed
    prune: bool = False                 # drop rows whose file is gone from the data root
    progress: bool = True
    only: frozenset = None              # encode only these paths (a sample: the rest wait, not vanished)

    def __post_init__(self):
        _choice("engine", self.engine, ENGINE_NAMES)
        if self.shard_rows < 1:
            raise ExtractError(f"shard_rows={self.shard_rows}: give 1 or more")


# What a cache's fingerprint decides, and so what extracting into an existing cache takes from it
# unless the caller chose otherwise (a different choice is then refused, as ever).
FROM_THE_CACHE = ("backbone", "layers", "weights", "crop_size", "dtype", "views", "jpeg_draft", "decoder",
                  "split_seed", "split_fractions", "precision", "runtime")


def codes_for_cache(codes: CodeSpec, given, existing, cache_path="the cache") -> CodeSpec:
    """A cache knows its extractor: every field of FROM_THE_CACHE the caller did not give (``given``:
    the names chosen) is the one ``existing`` (the cache's Fingerprint, or None for a new cache)
    recorded, so `extract DATA --cache codes.h5` extends a cache of any backbone, layers, weights or
    input size as it was made. Weights from a file cannot be found from their hash: those must be given."""
    if existing is None:
        return codes
    from dataclasses import replace

    from .backbones import get_backbone
    given = set(given or ())
    take = {}
    if "backbone" not in given:
        take["backbone"] = existing.backbone
    backbone = get_backbone(take.get("backbone", codes.backbone))
    if backbone.name == existing.backbone:  # another backbone's layers or inputs mean nothing here
        if "layers" not in given:
            take["layers"] = tuple(existing.layers)
        if "weights" not in given:
            identity = str(existing.weights or "")
            if identity.startswith("random:"):
                take["weights"] = identity.split()[0]
            elif identity.startswith("file:"):
                raise ExtractError(f"{cache_path}: its codes come from weights in a file "
                                   f"({identity.split()[0][len('file:'):]}); give that file again as weights=")
        preprocess = existing.preprocess or {}
        if "crop_size" not in given and preprocess.get("crop") not in (None, backbone.preprocess.crop):
            take["crop_size"] = int(preprocess["crop"])
        if "jpeg_draft" not in given:
            take["jpeg_draft"] = bool(preprocess.get("jpeg_draft", False))
        if "decoder" not in given:
            take["decoder"] = preprocess.get("decoder", "pil")
        if "precision" not in given and existing.quantization:
            take["precision"] = "int8"
        if "runtime" not in given and "precision" not in given and str(existing.precision).startswith("onnxruntime"):
            take["runtime"] = "onnxruntime"  # the cache's codes came from the exported graph: so do these
    if "dtype" not in given:
        take["dtype"] = existing.dtype
    if "views" not in given:
        take["views"] = int((existing.views or {}).get("count", 0))
    policy = existing.provenance.get("split_policy")
    if isinstance(policy, str):
        import json
        policy = json.loads(policy)
    if policy:
        if "split_seed" not in given:
            take["split_seed"] = int(policy.get("seed", 0))
        if "split_fractions" not in given and policy.get("fractions"):
            take["split_fractions"] = tuple(policy["fractions"])
    return replace(codes, **take)


def layer_names(layer) -> tuple:
    """The one reading of layers as the user may name them, as a tuple of names: None
    (DEFAULT_LAYERS), one name, several joined by "," or by "+" (as a cache, a model file and
    load_codes write them), or a sequence of names."""
    if layer is None:
        return DEFAULT_LAYERS
    if isinstance(layer, str):
        return tuple(p.strip() for p in layer.replace("+", ",").split(",") if p.strip())
    return tuple(str(p).strip() for p in layer)


def _choice(option, value, allowed):
    if value not in allowed:
        raise ExtractError(f"{option}={value}: choose {' or '.join(allowed) if len(allowed) < 3 else ', '.join(allowed)}")
