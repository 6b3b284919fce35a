"""Encode new images with the exact extractor a cache's fingerprint names.

This is the one function stage two imports from stage one (for predict).
"""
import os

import numpy as np

from .errors import ExtractError
from .extractor import Extractor, RuntimeOptions
from .sources import Record, walk_images


def expand_image_paths(inputs) -> list:
    """Files as given, folders searched recursively for images (sorted); hidden files skipped."""
    paths = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            paths += [p for p, _ in walk_images(item, [])]
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise ExtractError(f"{item}: no such file or folder; pass image files or folders of images")
    return paths


def encode_images(fingerprint: dict, inputs, weights_file=None, device="auto", batch_size=None,
                  workers=None, layer=None):
    """Codes of ``layer`` for image files/folders, computed as the cache's extractor did.

    Returns (paths, codes float32 [n, D], failures [(path, reason)]). Codes are rounded to the
    cache's stored dtype, so a classifier sees what it was trained on.
    """
    extractor = Extractor.from_fingerprint(fingerprint, weights_file,
                                           RuntimeOptions(device=device, batch_size=batch_size, workers=workers))
    layer = layer or extractor.fingerprint.layers[0]
    paths = expand_image_paths(inputs)
    if not paths:
        raise ExtractError(f"no images found in {', '.join(map(str, inputs))}")
    records = [Record(path=p, abspath=os.path.abspath(p), label=None) for p in paths]
    ok, parts, failures = [], [], []
    for batch in extractor.encode(records):
        ok += [paths[i] for i in batch.indices]
        if batch.indices:
            parts.append(batch.codes[layer])
        failures += [(paths[i], reason) for i, reason in batch.failed]
    codes = np.concatenate(parts) if parts else np.zeros((0, extractor.widths[layer]), np.float32)
    return ok, extractor.round_to_storage(codes), failures
