"""Rebuild the exact extractor a cache's fingerprint names, and encode new images with it.

This is the one function stage two imports from stage one (for predict).
"""
import os

import numpy as np

from . import int8
from .backbones import get_backbone
from .device import batching, pick_device, pick_precision
from .encoder import encode_batches
from .errors import ExtractError, WeightsUnavailable
from .preprocessing import Preprocess
from .sources import Record, walk_images
from .weights import resolve_weights


def expand_image_paths(inputs) -> list:
    """Files as given, folders searched recursively for images (sorted); hidden files skipped."""
    paths = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            paths += list(walk_images(item, []))
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise ExtractError(f"{item}: no such file or folder; pass image files or folders of images")
    return paths


def _weights_for(spec, identity: str, weights_file=None):
    if identity.startswith("random:"):
        return resolve_weights(spec, identity)
    if identity.startswith("file:"):
        if not weights_file:
            raise WeightsUnavailable(f"the model was trained on codes from weights {identity}; "
                                     "pass that file with --weights FILE")
        weights = resolve_weights(spec, weights_file)
    else:
        weights = resolve_weights(spec, None)
    if weights.identity.split("sha256:")[-1] != identity.split("sha256:")[-1]:
        raise WeightsUnavailable(f"weights {weights.identity} are not the ones the model was trained with "
                                 f"({identity}); pass the same weights")
    return weights


def encode_images(fingerprint: dict, inputs, weights_file=None, device="auto", batch_size=None,
                  workers=None, layer=None):
    """Codes of ``layer`` for image files/folders, computed as the cache's extractor did.

    Returns (paths, codes float32 [n, D], failures [(path, reason)]). Codes are rounded to the
    cache's stored dtype, so a classifier sees what it was trained on.
    """
    spec = get_backbone(fingerprint["backbone"])
    layer = layer or fingerprint["layers"][0]
    preprocess = Preprocess.from_dict(fingerprint["preprocess"])
    weights = _weights_for(spec, fingerprint["weights"], weights_file)
    paths = expand_image_paths(inputs)
    if not paths:
        raise ExtractError(f"no images found in {', '.join(map(str, inputs))}")
    records = [Record(path=p, abspath=os.path.abspath(p), label=None) for p in paths]
    model = spec.build(weights, tuple(fingerprint["layers"]))
    quantization = fingerprint.get("quantization")
    if quantization:
        # The codes were computed in int8 with recorded activation ranges: rebuild that network.
        dev, precision = pick_device("cpu"), "int8"
        model = int8.quantize(model, preprocess.crop, quantization)
    else:
        dev = pick_device(device)
        precision = pick_precision("auto", dev)
    ok, parts, failures = [], [], []
    for batch in encode_batches(model, preprocess, records, dev, precision, *batching(dev, batch_size, workers)):
        ok += [paths[i] for i in batch.indices]
        if batch.indices:
            parts.append(batch.codes[layer])
        failures += [(paths[i], reason) for i, reason in batch.failed]
    width = spec.layers[layer]
    codes = np.concatenate(parts) if parts else np.zeros((0, width), np.float32)
    codes = codes.astype(fingerprint.get("dtype", "float32")).astype(np.float32)
    return ok, codes, failures
