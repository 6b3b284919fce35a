"""img2vec's use, without a cache: a backbone's codes for a few images, as a numpy array."""
import os
import tempfile

import numpy as np


class Encoder:
    """Encoder("resnet50").encode(["a.jpg", pil_image]) -> float32 [n, D], one row per image.

    The same extractor as `extract` (backbone, layer, weights, preprocessing, precision), so a
    photo's codes equal the ones a cache of it holds (before the cache's float16 rounding).
    layer: one name or "a,b" (codes side by side; default the backbone's first default layer).
    weights: None (pretrained, the library's standard cache), "random[:SEED]" or a FILE.
    """

    def __init__(self, backbone="vgg16", layer=None, *, weights=None, device="auto", precision="auto",
                 batch_size=None, crop_size=None):
        from .extract.config import CodeSpec, RunOptions
        from .extract.extractor import Extractor
        layers = tuple(p.strip() for p in layer.split(",")) if isinstance(layer, str) else tuple(layer or ())
        spec = CodeSpec(backbone=backbone, layers=layers, weights=weights, precision=precision, crop_size=crop_size)
        self._extractor = Extractor.for_new_codes(spec, options=RunOptions(device=device, batch_size=batch_size,
                                                                             workers=0))
        self.layers = list(self._extractor.fingerprint.layers) if layers else [self._extractor.fingerprint.layers[0]]

    @property
    def width(self) -> int:
        return sum(self._extractor.widths[name] for name in self.layers)

    def encode(self, images) -> np.ndarray:
        """images: paths and/or PIL images (one image alone is fine). A file that cannot be decoded
        raises ValueError naming it."""
        from .extract.sources.records import Record
        single = isinstance(images, (str, os.PathLike)) or hasattr(images, "convert")
        images = [images] if single else list(images)
        with tempfile.TemporaryDirectory(prefix="cnncodes-encode-") as tmp:
            paths = []
            for i, image in enumerate(images):
                if hasattr(image, "convert"):  # a PIL image: lossless PNG, decoded as a file would be
                    path = os.path.join(tmp, f"{i}.png")
                    image.save(path, format="PNG")
                else:
                    path = os.fspath(image)
                paths.append(path)
            records = [Record(path=p, abspath=os.path.abspath(p), label=None) for p in paths]
            rows = [None] * len(records)
            for batch in self._extractor.encode(records, views=False):
                if batch.failed:
                    i, reason = batch.failed[0]
                    shown = f"image {i} (a PIL image)" if hasattr(images[i], "convert") else paths[i]
                    raise ValueError(f"{shown}: {reason}")
                if batch.indices:
                    codes = np.concatenate([batch.codes[name] for name in self.layers], axis=1)
                    for row, i in zip(codes, batch.indices):
                        rows[i] = row
        out = np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.width), np.float32)
        return out[0] if single else out

    def __repr__(self):
        fp = self._extractor.fingerprint
        return f"Encoder({fp.backbone}, layer={'+'.join(self.layers)}, {self.width}-d, {fp.precision})"
