"""img2vec's use, without a cache: a backbone's codes for a few images, as a numpy array."""
import os
import tempfile

import numpy as np


class Encoder:
    """Encoder("resnet50").encode(["a.jpg", pil_image]) -> float32 [n, D], one row per image.

    The same extractor as `extract` (backbone, layer, weights, preprocessing, precision), so a
    photo's codes equal the ones a cache of it holds (before the cache's float16 rounding).
    layer: one name, or several as "a,b" or "a+b" (a model's ``.layer`` as it is) or a list: codes
    side by side. Default: the backbone's default layers side by side, as extract caches them and
    fit trains on them (efficientnet_lite0: avgpool+stage6, 1,472-d).
    weights: None (pretrained, the library's standard cache), "random[:SEED]" or a FILE.
    """

    def __init__(self, backbone="vgg16", layer=None, *, weights=None, device="auto", precision="auto",
                 batch_size=None, crop_size=None):
        from ..extract.config import CodeSpec, RunOptions, layer_names
        from ..extract.extractor import Extractor
        layers = layer_names(layer)
        spec = CodeSpec(backbone=backbone, layers=layers, weights=weights, precision=precision, crop_size=crop_size)
        self._extractor = Extractor.for_new_codes(spec, options=RunOptions(device=device, batch_size=batch_size,
                                                                             workers=0))
        fingerprint = self._extractor.fingerprint
        # what load_codes reads by default: every layer of codes, not the whole maps
        self.layers = list(fingerprint.layers) if layers else \
            [name for name in fingerprint.layers if name not in fingerprint.map_shapes] or [fingerprint.layers[0]]

    @property
    def width(self) -> int:
        return sum(self._extractor.widths[name] for name in self.layers)

    def encode(self, images) -> np.ndarray:
        """images: paths, PIL images and/or uint8 arrays (one image alone gives one row, 1-d). A
        file that cannot be decoded raises ValueError naming it."""
        from ._inputs import as_list, images_as_files, is_image
        from ..extract.sources.records import Record
        single = isinstance(images, (str, os.PathLike)) or is_image(images)
        images = as_list(images)
        with tempfile.TemporaryDirectory(prefix="cnncodes-encode-") as tmp:
            paths, shown = images_as_files(images, tmp)
            records = [Record(path=p, abspath=os.path.abspath(p), label=None) for p in paths]
            rows = [None] * len(records)
            for batch in self._extractor.encode(records, views=False):
                if batch.failed:
                    i, reason = batch.failed[0]
                    raise ValueError(f"{shown[i]}: {reason}")
                if batch.indices:
                    codes = np.concatenate([batch.codes[name] for name in self.layers], axis=1)
                    for row, i in zip(codes, batch.indices):
                        rows[i] = row
        out = np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.width), np.float32)
        return out[0] if single else out

    def __repr__(self):
        fp = self._extractor.fingerprint
        return f"Encoder({fp.backbone}, layer={'+'.join(self.layers)}, {self.width}-d, {fp.precision})"
