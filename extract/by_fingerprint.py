"""Encode new images with the exact extractor a cache's fingerprint names.

The one door from stage two into stage one (predict), and verify --recompute's re-extraction.
"""
import os
from dataclasses import replace

import numpy as np

from .errors import ExtractError
from .config import RunOptions, layer_names
from .extractor import Extractor
from .sources import Record, expand_image_paths, scan_source


def _encoder(fingerprint, weights_file, device, batch_size=None, workers=None, layer=None, precision=None):
    """The cache's extractor, and the layers whose codes go side by side (a tuple): ``layer`` in any
    form layer_names reads; not named, the cache's first layer (what stage two reads by default).
    precision: a float precision to compute in (default: the device's automatic one)."""
    if isinstance(fingerprint, dict):
        from ..cache import Fingerprint
        fingerprint = Fingerprint.from_attrs(fingerprint)
    keep = bool(precision and precision != "auto" and not fingerprint.quantization)
    extractor = Extractor.from_fingerprint(fingerprint.with_precision(precision) if keep else fingerprint, weights_file,
                                           RunOptions(device=device, batch_size=batch_size, workers=workers),
                                           keep_precision=keep)
    return extractor, layer_names(layer) or tuple(extractor.fingerprint.layers[:1])


def _side_by_side(by_layer: dict, layers) -> np.ndarray:
    return np.concatenate([by_layer[name] for name in layers], axis=1)


def encode_images(fingerprint, inputs, weights_file=None, device="auto", batch_size=None,
                  workers=None, layer=None, mirrored=False, precision=None):
    """Codes of ``layer`` (one name, "a,b", "a+b" or a sequence; default the cache's first layer)
    for image files/folders, computed as the cache's extractor did (centre views: augmented views
    are for training rows only).

    Returns (paths, codes float32 [n, D], failures [(path, reason)]); with ``mirrored``, codes are
    [n, 2, D]: each image's centre view and its mirror image (test-time views). Codes are rounded
    to the cache's stored dtype, so a classifier sees what it was trained on.
    """
    extractor, layers = _encoder(fingerprint, weights_file, device, batch_size, workers, layer, precision)
    paths = expand_image_paths(inputs)
    if not paths:
        raise ExtractError(f"no images found in {', '.join(map(str, inputs))}")
    records = [Record(path=p, abspath=os.path.abspath(p), label=None) for p in paths]
    ok, parts, failures = [], [], []
    for batch in extractor.encode(records, views=False, mirrored=mirrored):
        ok += [paths[i] for i in batch.indices]
        if batch.indices:
            codes = _side_by_side(batch.codes, layers)
            parts.append(np.stack([codes, _side_by_side(batch.mirrored, layers)], axis=1) if mirrored else codes)
        failures += [(paths[i], reason) for i, reason in batch.failed]
    width = sum(extractor.widths[name] for name in layers)
    codes = np.concatenate(parts) if parts else np.zeros((0, 2, width) if mirrored else (0, width), np.float32)
    return ok, extractor.round_to_storage(codes), failures


def encode_texts(fingerprint, texts, weights_file=None):
    """Text queries for codes of an open_clip ``embedding`` layer: the same model's text tower, with
    the weights the cache's codes came from."""
    from .backbones import get_backbone
    from .weights import weights_for_identity
    spec = get_backbone(fingerprint.backbone)
    if not hasattr(spec, "encode_text"):
        raise ExtractError(f"text queries need an open_clip backbone (its text tower); this cache's is "
                           f"{fingerprint.backbone}")
    if fingerprint.weights.startswith("random:"):
        raise ExtractError(f"text queries need trained weights, and this cache's codes came from {fingerprint.weights}")
    return spec.encode_text(weights_for_identity(spec, fingerprint.weights, weights_file), texts)


def _records_in(root, paths) -> dict:
    """path -> Record of these paths in the source ``root``: a folder is looked up file by file
    (no walk of a big folder for a few rows); a manifest or tar shards are scanned."""
    if os.path.isdir(root):
        return {p: Record(path=p, abspath=os.path.abspath(os.path.join(root, p)), label=None)
                for p in paths if os.path.isfile(os.path.join(root, p))}
    return {r.path: r for r in scan_source(root).records if r.path in paths}


def recompute_rows(cache_path, count, seed=0, data_root=None, weights_file=None, device="auto"):
    """Re-extract ``count`` random rows of a cache; (worst cosine to the stored codes, rows compared,
    failures). Augmented views are recomputed too: each is seeded by its image's content key and
    view index, so it comes out as it did (a changed crop sampler would show here). The cosine is
    taken on the first layer, after rounding to the stored dtype."""
    from ..cache import open_cache
    with open_cache(cache_path) as c:
        layer = c.first_layer
        root = data_root or c.fingerprint.provenance.get("data_root")
        picked = np.sort(np.random.default_rng(seed).choice(len(c), size=min(count, len(c)), replace=False))
        mask = np.zeros(len(c), dtype=bool)
        mask[picked] = True  # read only these rows' paths and codes, not the whole cache
        paths, views, splits = c.paths_of(picked), c.views[picked], c.splits[picked]
        stored = {(path, int(view)): code for path, view, code in zip(paths, views, c.codes(layer, rows=mask))}
        fingerprint = c.fingerprint
    split_of_image = dict(zip(paths, splits))  # the stored split decides whether an image has views
    source = _records_in(root, split_of_image)
    present = [p for p in split_of_image if p in source]
    missing = [(p, "no such file under the data folder") for p in split_of_image if p not in present]
    if not present:
        return None, 0, missing
    extractor, layers = _encoder(fingerprint, weights_file, device, layer=layer)
    records = [replace(source[p], label=None, split=str(split_of_image[p])) for p in present]
    worst, compared, failures = 1.0, 0, []
    for batch in extractor.encode(records, views=bool(views.any())):
        codes = extractor.round_to_storage(_side_by_side(batch.codes, layers)) if batch.indices else []
        for code, i, view in zip(codes, batch.indices, batch.views or [0] * len(batch.indices)):
            old = stored.get((present[i], view))
            if old is not None:
                worst = min(worst, float(code @ old / max(1e-12, np.linalg.norm(code) * np.linalg.norm(old))))
                compared += 1
        failures += [(present[i], reason) for i, reason in batch.failed]
    return (worst if compared else None), compared, missing + failures
