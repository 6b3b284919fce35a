"""One object that turns decoded images into codes, built from a fingerprint.

`extract`, `predict` and every remote worker build the same `Extractor` from the same
fingerprint (backbone, layers, weights, preprocessing, int8 ranges), so "the same codes" holds
by construction. Runtime choices that do not change the codes' identity (device, batch size,
workers, compile) are options of the object, not of the fingerprint.
"""
import os
import platform
import time
from dataclasses import replace

import numpy as np
import torch
import torchvision

from ..cache import Fingerprint

from . import int8
from .backbones import get_backbone
from .config import CodeSpec, RunOptions
from .device import batching, pick_device, pick_precision
from .encoder import EncodePlan, encode_batches
from .errors import ExtractError, WeightsUnavailable
from .preprocessing import Preprocess
from .sources import DEFAULT_SPLIT_FRACTIONS, source_location
from .views import ViewPlan, ViewRecipe
from .onnx_network import PRECISION as ONNX_PRECISION
from .weights import PRETRAINED_ALIASES, resolve_weights, weights_for_identity


class Extractor:
    """Network + layers + preprocessing + precision (+ int8 ranges) on one device."""

    def __init__(self, fingerprint: Fingerprint, weights, options: RunOptions, device=None, weights_file=None):
        self.fingerprint = fingerprint
        self.weights_file = weights_file  # a --weights FILE, so remote workers can load the same file
        self.spec = get_backbone(fingerprint.backbone)
        self.preprocess = Preprocess.from_dict(fingerprint.preprocess)
        self.weights = weights
        self.device = device or pick_device(options.device)
        batch_size, workers = batching(self.device, options.batch_size, options.workers)
        self.options = replace(options, batch_size=batch_size, workers=workers)  # resolved for this device
        self._model = None
        self._network = None  # the float network, kept from calibration for quantizing

    # --- building -------------------------------------------------------------------------------
    @classmethod
    def for_new_codes(cls, codes: CodeSpec, data_root=".", options: RunOptions = None,
                      compute_device: str = None) -> "Extractor":
        """From what the user asked for (a CodeSpec, already checked in itself); checks it against
        the backbone and resolves the weights before any work.

        compute_device: where the codes will be computed when that is not this machine (a
        cluster's workers); it decides the automatic precision."""
        options = options or RunOptions()
        spec = get_backbone(codes.backbone)
        layers = spec.check_layers(codes.layers)
        preprocess = spec.preprocess.with_crop(codes.crop_size) if codes.crop_size else spec.preprocess
        preprocess = replace(preprocess, jpeg_draft=codes.jpeg_draft, decoder=codes.decoder)
        device = torch.device(compute_device) if compute_device else pick_device(options.device)
        precision = pick_precision(codes.precision, device)
        if codes.decoder == "gpu" and device.type != "cuda":
            raise ExtractError(f"decoder=gpu decodes JPEGs on a CUDA device; this run computes on {device.type}: "
                               "use decoder=torchvision (the same library on the CPU) or pil")
        spec.check_precision(precision)
        if precision == "int8" and options.compile:
            raise ExtractError("compile=True does not apply to precision=int8 (its kernels are already fused)")
        if codes.runtime == "onnxruntime":
            if device.type != "cpu" or options.compile:
                raise ExtractError("runtime=onnxruntime runs the network on the CPU without torch.compile; "
                                   "pass device=cpu (and no compile=True), or use runtime=torch")
            precision = ONNX_PRECISION
        resolved = _resolve_or_name_the_weights_here(spec, codes.weights)  # fails here, before any work
        fingerprint = Fingerprint(
            backbone=spec.name, layers=layers, weights=resolved.identity, preprocess=preprocess.to_dict(),
            dtype=codes.dtype, precision=precision,
            views=ViewRecipe(int(codes.views)).to_dict() if codes.views else None,
            provenance={"torch_version": str(torch.__version__), "torchvision_version": str(torchvision.__version__),
                        "backbone_library": spec.library_version, "python_version": platform.python_version(),
                        "data_root": source_location(data_root), "split_policy": codes.split_policy,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        **({"map_shapes": spec.map_shapes(layers, preprocess.crop)} if set(layers) & set(spec.maps)
                           else {})})
        weights_file = os.path.abspath(codes.weights) if resolved.identity.startswith("file:") else None
        return cls(fingerprint, resolved, options, device, weights_file)

    @classmethod
    def from_fingerprint(cls, fingerprint, weights_file=None, options: RunOptions = None,
                         keep_precision=False) -> "Extractor":
        """The extractor that made a cache's (or a model file's) codes. int8 runs on the CPU with
        the recorded ranges; otherwise the device's default precision, or the fingerprint's own
        with ``keep_precision`` (a cluster worker computing a run's codes)."""
        if isinstance(fingerprint, dict):
            fingerprint = Fingerprint.from_attrs(fingerprint)
        options = options or RunOptions()
        spec = get_backbone(fingerprint.backbone)
        weights = weights_for_identity(spec, fingerprint.weights, weights_file)
        if fingerprint.quantization:
            device = pick_device("cpu")
            fingerprint = fingerprint.with_precision("int8")
        else:
            device = pick_device(options.device)
            if not keep_precision:
                fingerprint = fingerprint.with_precision(pick_precision("auto", device))
        return cls(fingerprint, weights, options, device, weights_file)

    @property
    def batch_size(self) -> int:
        return self.options.batch_size

    @property
    def workers(self) -> int:
        return self.options.workers

    @property
    def precision(self) -> str:
        return self.fingerprint.precision

    @property
    def widths(self) -> dict:
        return self.spec.widths(self.fingerprint.layers, self.preprocess.crop)

    @property
    def model(self):
        """Built on first use: a re-run with nothing to do never builds the network."""
        if self._model is None:
            model = self._network
            if model is None and self.precision != ONNX_PRECISION:  # an exported graph needs no torch network
                model = self.spec.build(self.weights, self.fingerprint.layers, self.preprocess.crop)
            self._network = None
            if self.precision == "int8":
                if not self.fingerprint.quantization:
                    raise ExtractError("int8 extractor used before calibration")
                model = int8.quantize(model, self.preprocess.crop, self.fingerprint.quantization)
            if self.precision == ONNX_PRECISION:
                model = self._onnx_network()
            self._model = model
        return self._model

    def _onnx_network(self):
        """--runtime onnxruntime: the cut network exported once (kept by what decides the graph);
        the torch network is built only when no exported file exists yet."""
        from .onnx_network import onnx_network
        fp = self.fingerprint
        identity = {"backbone": fp.backbone, "layers": list(fp.layers), "weights": fp.weights,
                    "crop": self.preprocess.crop}
        return onnx_network(lambda: self.spec.build(self.weights, fp.layers, self.preprocess.crop), identity,
                            fp.layers, self.preprocess.crop)

    @property
    def compute_precision(self) -> str:
        """What the encoder's autocast runs: ONNX Runtime's graph is fp32 and never autocast."""
        return "fp32" if self.precision == ONNX_PRECISION else self.precision

    # --- int8 -----------------------------------------------------------------------------------
    def adopt_calibration(self, existing: Fingerprint) -> None:
        """An int8 run appending to a cache quantizes exactly as the run that started it."""
        if existing is None or self.precision != "int8":
            return
        if not existing.quantization:
            held = existing.precision or "fp32"
            raise ExtractError(f"holds {held} codes; int8 codes cannot join them. Use precision={held} "
                               "or a new cache=")
        self.fingerprint = replace(self.fingerprint, quantization=existing.quantization)
        self._model = None

    def calibrate(self, records, count, engine) -> None:
        """int8's activation ranges from a fixed sample of ``records`` (first run of a cache only;
        ``count`` and ``engine`` were checked by the CodeSpec)."""
        sample = int8.calibration_sample(records, count)
        network = self.spec.build(self.weights, self.fingerprint.layers, self.preprocess.crop)
        keys = []

        def feed(prepared):
            plan = EncodePlan(self.device, "fp32", fixed_size=False)  # the observers must not see zero padding
            for batch in encode_batches(prepared, self.preprocess, sample, replace(self.options, compile=False), plan):
                keys.extend(batch.keys.values())
        quantization = int8.calibrate(network, self.preprocess.crop, feed, keys, engine)
        self.fingerprint = replace(self.fingerprint, quantization=quantization)
        self._model, self._network = None, network

    # --- encoding -------------------------------------------------------------------------------
    def encode(self, records, views=True, mirrored=False, stored=False):
        """EncodedBatch for consecutive batches of records (objects with .abspath). views: train
        records also yield the augmented views the fingerprint asks for (extract; not predict).
        mirrored: each image's mirror image is encoded too (predict --tta). stored: the codes come
        back in the cache's dtype, cast on the device (extract), else float32."""
        codes_dtype = getattr(torch, self.fingerprint.dtype) if stored else None
        plan = EncodePlan(self.device, self.compute_precision, views=self.view_plan() if views else None,
                          mirrored=mirrored, codes_dtype=codes_dtype)
        return encode_batches(self.model, self.preprocess, records, self.options, plan)

    def view_plan(self):
        """The ViewPlan of the fingerprint's augmented views, or None."""
        if not self.fingerprint.views:
            return None
        policy = self.fingerprint.provenance.get("split_policy") or {}
        return ViewPlan(ViewRecipe.from_dict(self.fingerprint.views), self.preprocess, policy.get("seed", 0),
                        policy.get("fractions", DEFAULT_SPLIT_FRACTIONS))

    def round_to_storage(self, codes: np.ndarray) -> np.ndarray:
        """Codes as a classifier trained on the cache saw them (rounded to the stored dtype)."""
        return codes.astype(self.fingerprint.dtype).astype(np.float32)


def _resolve_or_name_the_weights_here(spec, choice):
    """resolve_weights; where pretrained weights cannot be had (offline, say), the error also names
    the backbones whose weights this machine already holds: a way out with nothing to download."""
    try:
        return resolve_weights(spec, choice)
    except WeightsUnavailable as exc:
        from .backbones.listing import backbones_with_weights_here
        try:
            here = backbones_with_weights_here()
        except Exception:  # a listing that fails must not hide the error it decorates
            here = []
        if not here or choice not in PRETRAINED_ALIASES:
            raise
        raise WeightsUnavailable(f"{exc}; or use a backbone whose weights this machine already holds: "
                                 f"{', '.join(here[:8])}{' ...' if len(here) > 8 else ''}") from None
