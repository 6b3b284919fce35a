"""The extract loop: DataLoader workers decode, the device computes, the cache writer commits.

It knows the cache only through the cache package's public functions.
"""
import os
import platform
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torchvision

import cache as cache_api

from . import int8
from .backbones import get_backbone
from .decoding import DEFAULT_MAX_PIXELS
from .encoder import encode_batches
from .device import batching, pick_device, pick_precision
from .errors import ExtractError
from .sources import DEFAULT_SPLIT_FRACTIONS, scan_image_folder, with_keys_and_splits
from .weights import resolve_weights

DTYPES = {"float16": np.float16, "float32": np.float32}
DECODERS = ("pil", "torchvision")
SHARD_TARGET_ROWS = 512  # rows per committed shard: what a kill can lose at most


@dataclass
class ExtractConfig:
    data_root: str
    cache_path: str
    backbone: str = "vgg16"
    layers: tuple = ()
    weights: str = None
    dtype: str = "float16"
    device: str = "auto"
    precision: str = "auto"
    calibration_images: int = int8.DEFAULT_CALIBRATION_IMAGES  # int8 only
    int8_engine: str = int8.DEFAULT_ENGINE                      # int8 only, first run only
    batch_size: int = None
    workers: int = None
    crop_size: int = None
    jpeg_draft: bool = False
    decoder: str = "pil"
    compile: bool = False  # torch.compile the network (a one-off compile; pays off on long GPU runs)
    split_seed: int = 0
    split_fractions: tuple = DEFAULT_SPLIT_FRACTIONS
    shard_rows: int = SHARD_TARGET_ROWS
    channels_last: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS
    progress: bool = True


@dataclass
class ExtractSummary:
    cache_path: str
    written: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    ignored: int = 0
    interrupted: bool = False
    loop_seconds: float = 0.0  # decode + compute + commit only (no scan, weights or model build)
    failures: list = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return (self.written + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        state = "interrupted; re-run the same command to resume. " if self.interrupted else ""
        return (f"{state}{self.cache_path}: wrote {self.written}, skipped {self.skipped} already cached, "
                f"failed {self.failed}, {self.seconds:.1f} s, {self.images_per_second:.1f} images/s")


def build_fingerprint(spec, layers, weights, preprocess, dtype, precision, data_root, split_seed,
                      split_fractions) -> dict:
    return {
        "schema_version": cache_api.SCHEMA_VERSION,
        "backbone": spec.name,
        "layers": list(layers),
        "weights": weights.identity,
        "preprocess": preprocess.to_dict(),
        "dtype": dtype,
        "precision": precision,
        "torch_version": str(torch.__version__),
        "torchvision_version": str(torchvision.__version__),
        "python_version": platform.python_version(),
        "data_root": os.path.abspath(data_root),
        "split_policy": {"seed": split_seed, "fractions": list(split_fractions)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run_extract(config: ExtractConfig) -> ExtractSummary:
    """Extract codes for every image under config.data_root not yet in the cache."""
    spec = get_backbone(config.backbone)
    layers = spec.check_layers(config.layers)
    if config.dtype not in DTYPES:
        raise ExtractError(f"--dtype {config.dtype}: choose float16 or float32")
    preprocess = spec.preprocess.with_crop(config.crop_size) if config.crop_size else spec.preprocess
    preprocess = _with_decoding(preprocess, config)
    device = pick_device(config.device)
    precision = pick_precision(config.precision, device)
    spec.check_precision(precision)
    if precision == "int8":
        _check_int8_options(config)
    scan = scan_image_folder(config.data_root)
    weights = resolve_weights(spec, config.weights)  # fails here, before any work, if unavailable
    attrs = build_fingerprint(spec, layers, weights, preprocess, config.dtype, precision, config.data_root,
                              config.split_seed, config.split_fractions)
    summary = ExtractSummary(cache_path=config.cache_path, ignored=len(scan.ignored))
    started = time.perf_counter()
    with cache_api.cache_lock(config.cache_path):
        if precision == "int8":
            _reuse_calibration(config.cache_path, attrs)
        cache_api.check_fingerprint(config.cache_path, attrs)
        cache_api.recover_shards(config.cache_path)  # fold in what an interrupted run committed
        records = with_keys_and_splits(scan.records, config.split_seed, config.split_fractions)
        rows, failures = cache_api.read_done_index(config.cache_path)
        pending = [r for r in records if rows.get(r.path) != r.key and failures.get(r.path) != r.key]
        summary.skipped = len(records) - len(pending)
        if pending:
            model = spec.build(weights, layers)
            if precision == "int8":
                if "quantization" not in attrs:  # int8 adds its calibrated ranges (extract/int8.py)
                    attrs["quantization"] = _calibrate(config, model, preprocess, pending, device)
                model = int8.quantize(model, preprocess.crop, attrs["quantization"])
            writer = cache_api.CacheWriter(config.cache_path, attrs, {l: spec.layers[l] for l in layers},
                                           DTYPES[config.dtype])
            loop_started = time.perf_counter()
            try:
                _run_loop(config, model, preprocess, pending, writer, device, precision, summary)
            except KeyboardInterrupt:
                summary.interrupted = True  # what is buffered is complete: commit it below
            finally:
                writer.close()
                summary.loop_seconds = time.perf_counter() - loop_started
                cache_api.recover_shards(config.cache_path)
    summary.seconds = time.perf_counter() - started
    return summary


def _with_decoding(preprocess, config):
    if config.decoder not in DECODERS:
        raise ExtractError(f"--decoder {config.decoder}: choose {' or '.join(DECODERS)}")
    if config.jpeg_draft and config.decoder != "pil":
        raise ExtractError("--jpeg-draft works with --decoder pil only (torchvision decodes at full size)")
    return replace(preprocess, jpeg_draft=config.jpeg_draft, decoder=config.decoder)


def _check_int8_options(config):
    if config.compile:
        raise ExtractError("--compile does not apply to --precision int8 (its kernels are already fused)")
    int8.check_engine(config.int8_engine)
    if config.calibration_images < 1:
        raise ExtractError(f"--calibration-images {config.calibration_images}: int8 needs at least 1 (default "
                           f"{int8.DEFAULT_CALIBRATION_IMAGES})")


def _reuse_calibration(cache_path, attrs):
    """An int8 run appending to a cache quantizes exactly as the run that started it."""
    existing = cache_api.existing_fingerprint(cache_path)
    if existing is None:
        return
    if not existing.get("quantization"):
        held = existing.get("precision", "fp32")
        raise ExtractError(f"{cache_path}: holds {held} codes; int8 codes cannot join them. "
                           f"Use --precision {held} or a new --cache")
    attrs["quantization"] = existing["quantization"]


def _calibrate(config, model, preprocess, pending, device) -> dict:
    """Activation ranges for int8 from a fixed sample of the images (on the first run only)."""
    sample = int8.calibration_sample(pending, config.calibration_images)
    batch_size, workers = batching(device, config.batch_size, config.workers)

    def feed(prepared):
        for _ in encode_batches(prepared, preprocess, sample, device, "fp32", batch_size, workers,
                                config.channels_last, config.max_pixels):
            pass
    return int8.calibrate(model, preprocess.crop, feed, [r.key for r in sample], config.int8_engine)


def _run_loop(config, model, preprocess, pending, writer, device, precision, summary):
    batch_size, workers = batching(device, config.batch_size, config.workers)
    # Shards hold whole batches, so a resumed run batches the remaining images exactly as an
    # uninterrupted run would, and computes bit-identical codes.
    shard_records = batch_size * max(1, round(config.shard_rows / batch_size))
    progress = _progress(len(pending), config.progress)
    for batch in encode_batches(model, preprocess, pending, device, precision, batch_size, workers,
                                config.channels_last, config.max_pixels, compile_model=config.compile):
        if batch.indices:
            records = [pending[i] for i in batch.indices]
            writer.add_rows([r.path for r in records], [r.key for r in records], [r.split for r in records],
                            [r.label for r in records], batch.codes)
            summary.written += len(records)
        if batch.failed:
            failed = [(pending[i], reason) for i, reason in batch.failed]
            writer.add_failures([r.path for r, _ in failed], [r.key for r, _ in failed],
                                [reason for _, reason in failed])
            summary.failed += len(failed)
            summary.failures += [(r.path, reason) for r, reason in failed]
        if writer.pending() >= shard_records:
            writer.commit_shard()
        progress.update(len(batch))
    progress.close()


class _NoProgress:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total, enabled):
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm
    return tqdm(total=total, unit="img", desc="extract", dynamic_ncols=True, smoothing=0.1)
