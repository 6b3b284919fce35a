"""The fingerprint: which extractor made a cache's codes, and whether two may share a matrix.

One typed object owns the rule, so the runner, the append API, `info` and `predict` agree on it.
"""
import json
from dataclasses import dataclass, field, fields, replace

from .errors import FingerprintMismatch

# Attributes that must match before codes may be appended to a cache: codes from another
# network, layer, weights, preprocessing, int8 calibration, storage type or augmented-view recipe
# cannot share a matrix.
COMPARED_FINGERPRINT_KEYS = ("backbone", "layers", "weights", "preprocess", "quantization", "dtype", "views")
# Kept with the provenance but compared where both sides record it: rows split by another seed or
# other fractions would mix two split policies in one cache (caches older than the record pass).
COMPARED_PROVENANCE_KEYS = ("split_policy",)
# Recorded for provenance, never compared (a resumed run on another machine is welcome).
PROVENANCE_KEYS = ("torch_version", "torchvision_version", "backbone_library", "python_version", "data_root", "split_policy", "created",
                   "map_shapes")


@dataclass(frozen=True)
class Fingerprint:
    backbone: str
    layers: tuple
    weights: str
    preprocess: dict
    dtype: str = "float16"
    quantization: dict = None  # int8 only: scheme, engine, calibration, activation ranges
    precision: str = "fp32"    # compute precision(s) used; recorded, not compared
    views: dict = None         # extract --views: the recipe of the train images' augmented views (extract/views.py)
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))

    # --- comparing -----------------------------------------------------------------------------
    def differences(self, other: "Fingerprint") -> list:
        """Names of the compared fields whose values differ."""
        diffs = [k for k in COMPARED_FINGERPRINT_KEYS if _norm(getattr(self, k)) != _norm(getattr(other, k))]
        return diffs + [k for k in COMPARED_PROVENANCE_KEYS
                        if self.provenance.get(k) is not None and other.provenance.get(k) is not None
                        and _norm(self.provenance[k]) != _norm(other.provenance[k])]

    def value(self, key):
        """A compared field's value (a field of its own, or kept with the provenance)."""
        return self.provenance.get(key) if key in COMPARED_PROVENANCE_KEYS else getattr(self, key)

    def compatible_with(self, other: "Fingerprint") -> bool:
        return not self.differences(other)

    def check_can_join(self, existing: "Fingerprint", cache_path) -> None:
        """Raise FingerprintMismatch, naming every difference, if these codes may not join ``existing``."""
        diffs = existing.differences(self)
        if diffs:
            detail = "; ".join(f"{k}: cache has {describe_value(existing.value(k))}, "
                               f"this run {describe_value(self.value(k))}" for k in diffs)
            raise FingerprintMismatch(
                f"{cache_path}: refusing to append codes from a different extractor ({detail}); "
                "use the cache's settings or write to a new file (cache=)")

    def describe(self) -> str:
        """One line for people: backbone, layers, weights, precision, storage."""
        text = f"{self.backbone} {','.join(self.layers)}, weights {self.weights}, {self.precision}, stored {self.dtype}"
        if self.quantization:
            text += f", {describe_value(self.quantization)}"
        if self.views:
            text += f", {describe_value(self.views)}"
        return text

    # --- maps ------------------------------------------------------------------------------------
    @property
    def map_shapes(self) -> dict:
        """map layer -> [C, H, W]: layers stored as whole maps (flattened), not pooled codes."""
        shapes = self.provenance.get("map_shapes") or {}
        return json.loads(shapes) if isinstance(shapes, str) else dict(shapes)

    def maps_in(self, layer: str) -> list:
        """The map layers among ``layer`` ("a+b")."""
        return [name for name in layer.split("+") if name in self.map_shapes]

    # --- storing -------------------------------------------------------------------------------
    def with_precision(self, precision: str) -> "Fingerprint":
        return replace(self, precision=precision)

    def merged_precision(self, other: "Fingerprint") -> "Fingerprint":
        """Rows computed in several precisions (a run resumed on another device) say so."""
        names = set(filter(None, self.precision.split(","))) | set(filter(None, other.precision.split(",")))
        return replace(self, precision=",".join(sorted(names)))

    def to_attrs(self) -> dict:
        attrs = {"backbone": self.backbone, "layers": list(self.layers), "weights": self.weights,
                 "preprocess": dict(self.preprocess), "dtype": self.dtype, "precision": self.precision}
        if self.quantization:
            attrs["quantization"] = self.quantization
        if self.views:
            attrs["views"] = self.views
        attrs.update(self.provenance)
        return attrs

    @classmethod
    def from_attrs(cls, attrs: dict) -> "Fingerprint":
        """From HDF5 attributes (JSON strings already decoded) or a model file's header."""
        preprocess = attrs.get("preprocess") or {}
        if isinstance(preprocess, str):
            preprocess = json.loads(preprocess)
        quantization = attrs.get("quantization") or None
        if isinstance(quantization, str):
            quantization = json.loads(quantization)
        views = attrs.get("views") or None
        if isinstance(views, str):
            views = json.loads(views)
        known = {f.name for f in fields(cls)}
        return cls(backbone=attrs.get("backbone"), layers=tuple(attrs.get("layers") or ()),
                   weights=attrs.get("weights"), preprocess=preprocess, dtype=attrs.get("dtype", "float16"),
                   quantization=quantization, precision=str(attrs.get("precision") or "fp32"), views=views,
                   provenance={k: attrs[k] for k in PROVENANCE_KEYS if k in attrs and k not in known})


def describe_value(value) -> str:
    """A fingerprint value as one short phrase for error messages."""
    if value is None:
        return "none"
    if isinstance(value, dict) and "calibration" in value:
        calibration = value["calibration"]
        return (f"int8 calibrated on {calibration['images']} images, {value.get('engine', 'x86')} engine "
                f"({calibration['keys_sha256'][:12]})")
    if isinstance(value, dict) and "count" in value and "scale" in value:
        return (f"{value['count']} augmented views per train image (crop scale {value['scale'][0]:g}-"
                f"{value['scale'][1]:g}, odd views mirrored)")
    if isinstance(value, dict) and set(value) == {"seed", "fractions"}:
        return (f"split_seed={value['seed']} with train/val/test fractions "
                f"{'/'.join(f'{x:g}' for x in value['fractions'])}")
    if isinstance(value, tuple):
        value = list(value)
    return repr(value)


def _norm(value):
    if isinstance(value, str) and value[:1] == "{":
        return json.loads(value)
    if isinstance(value, tuple):
        return list(value)
    return value
