"""Classify images with an exported ONNX model and ONNX Runtime: no torch anywhere.

Decoding is extract/decoding.py's (PIL, the cache's own rules: first frame, EXIF orientation,
RGB), and the resize and centre crop are done in PIL exactly as torchvision does them on a PIL
image (its output-size and crop rounding), so the graph sees the uint8 pixels the torch path
sees. Everything the graph needs is in its metadata (classify/deploy/onnx_export.py).
"""
import json
import os

import numpy as np
from PIL import Image

from ..errors import ClassifyError
from .predict import prediction, ranked

# What an exported graph is called and calls its ends (classify/deploy/onnx_export.py writes them);
# CODES, the codes the head reads, is in every graph exported since serve --similar (none before).
FORMAT = "cnncodes-onnx-1"
INPUT, OUTPUT, CODES = "image", "probabilities", "codes"

# torchvision's InterpolationMode values -> PIL's filters (what torchvision passes PIL).
PIL_FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
               "box": Image.BOX, "hamming": Image.HAMMING, "lanczos": Image.LANCZOS}


def resized_size(width, height, resize, squash=False) -> tuple:
    """(width, height) after torchvision's Resize(resize): the shorter side to ``resize``, the longer
    scaled and truncated to an int as torchvision does; both sides with ``squash``."""
    if squash:
        return resize, resize
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = resize, int(resize * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def network_input(img: Image.Image, preprocess: dict) -> np.ndarray:
    """An RGB PIL image -> uint8 [3, crop, crop], as Preprocess.pil_transform makes it."""
    crop = int(preprocess["crop"])
    size = resized_size(*img.size, int(preprocess["resize"]), bool(preprocess.get("squash")))
    if size != img.size:
        img = img.resize(size, PIL_FILTERS[preprocess.get("interpolation", "bilinear")])
    width, height = img.size
    if width < crop or height < crop:
        raise ClassifyError(f"image of {width}x{height} after resizing is smaller than the {crop}-pixel crop")
    top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
    return np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.uint8).transpose(2, 0, 1)


class OnnxModel:
    """An exported model: an ONNX Runtime session, its class names and preprocessing."""

    def __init__(self, path, threads=None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ClassifyError("runtime=onnxruntime needs `pip install 'cnncodes[deploy]'` (onnxruntime)") from None
        if not os.path.isfile(path):
            raise ClassifyError(f"{path}: no such ONNX model; write one with `cnncodes export-model MODEL.npz "
                                f"--out {path}`")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(path, options, providers=ort.get_available_providers())
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ClassifyError(f"{path}: not an ONNX model ONNX Runtime can load ({str(exc).splitlines()[0]}); "
                                "re-export it with `cnncodes export-model`") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise ClassifyError(f"{path}: an ONNX model without cnncodes metadata; export it with "
                                "`cnncodes export-model`")
        self.path = path
        self.class_names = json.loads(meta["class_names"])
        self.preprocess = json.loads(meta["preprocess"])
        self.meta = meta
        self.input, self.output = meta["input"], meta["output"]
        outputs = {o.name for o in self.session.get_outputs()}
        self.codes_output = meta.get("codes") if meta.get("codes") in outputs else None  # None: exported before

    @property
    def draft_size(self):
        return int(self.preprocess["resize"]) if self.preprocess.get("jpeg_draft") else None

    def prepare(self, source) -> np.ndarray:
        """A path or an image file's bytes -> uint8 [3, crop, crop]; DecodeError with the reason."""
        from ...extract.decoding import decode_rgb
        return network_input(decode_rgb(source, draft_size=self.draft_size), self.preprocess)

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        """uint8 [B, 3, crop, crop] -> probabilities [B, K], columns in class_names' order."""
        return self.session.run([self.output], {self.input: np.ascontiguousarray(batch, dtype=np.uint8)})[0]

    def predict_with_codes(self, batch: np.ndarray) -> tuple:
        """uint8 [B, 3, crop, crop] -> (probabilities [B, K], codes float32 [B, D] or None when the graph
        was exported without its codes output), from one run of the session."""
        if self.codes_output is None:
            return self.predict_proba(batch), None
        proba, codes = self.session.run([self.output, self.codes_output],
                                        {self.input: np.ascontiguousarray(batch, dtype=np.uint8)})
        return proba, codes

    def top_k(self, row, k=3) -> list:
        return ranked(row, self.class_names, k)


def predict_images_onnx(model_path, inputs, top_k=3, batch_size=32):
    """(predictions, failures) as classify.predict.predict_images gives them, through ONNX Runtime."""
    from ...extract.decoding import DecodeError
    from ...extract.sources import expand_image_paths
    model = OnnxModel(model_path)
    paths = expand_image_paths(inputs)
    if not paths:
        raise ClassifyError(f"no images found in {', '.join(map(str, inputs))}")
    predictions, failures = [], []
    for start in range(0, len(paths), batch_size):
        ok, arrays = [], []
        for path in paths[start:start + batch_size]:
            try:
                arrays.append(model.prepare(path))
                ok.append(path)
            except (DecodeError, ClassifyError, OSError) as exc:
                failures.append((path, str(exc)))
        if not ok:
            continue
        predictions += [prediction(path, row, model.class_names, top_k)
                        for path, row in zip(ok, model.predict_proba(np.stack(arrays)))]
    return predictions, failures
