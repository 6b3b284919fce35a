"""int8 inference on the CPU: post-training static quantization with PyTorch's FX workflow.

On CPUs without bf16 hardware (AVX2 only), int8 is the reduced precision that the hardware
has. Two kernel libraries (PyTorch "engines"): x86 (the default; fbgemm, activations kept to
7 bits against overflow on CPUs without VNNI) keeps the codes closer to fp32; onednn is faster
(PyTorch itself warns that its full-range activations may lose accuracy without VNNI). Their speed
and cosine to fp32: bench/precision_check.py, docs/benchmarks.md ("Is int8 safe?").

Activation ranges come from a calibration pass over a few of the user's own images. They are
recorded in the cache's fingerprint as plain (scale, zero point) pairs, so that a resumed run
and `predict` rebuild exactly the same quantized network instead of recalibrating.
"""
import contextlib
import hashlib
import warnings

import torch

from .errors import ExtractError
from .options import DEFAULT_INT8_ENGINE

with warnings.catch_warnings():
    # torch.ao.quantization announces its move to torchao; torchao's pt2e path needs
    # torch.compile (a C++ toolchain at run time) to reach int8 kernels, FX reaches them directly.
    warnings.simplefilter("ignore", DeprecationWarning)
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.observer import FixedQParamsObserver
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

SCHEME = "fx-static-int8: per-channel symmetric int8 weights, histogram-calibrated uint8 activations"


def calibration_sample(records, count):
    """``count`` records picked by a hash of their path: a fixed pseudo-random draw across the
    classes, known before any file is read."""
    return sorted(records, key=lambda r: hashlib.sha256(r.path.encode()).hexdigest())[:count]


@contextlib.contextmanager
def _quiet():
    """FX quantization repeats deprecation notices on every call; say it once in the docs instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        yield


def _prepare(model, crop, engine):  # engine: one of INT8_ENGINES (extract/config.py checks it)
    torch.backends.quantized.engine = engine
    return prepare_fx(model.eval(), get_default_qconfig_mapping(engine), _example_input(crop))


def _example_input(crop):
    return (torch.zeros(1, 3, crop, crop),)


def _activation_observers(prepared):
    """(name, observer) of each activation observer FX inserted, aliases included (an op such as
    max-pool shares its input's observer under a second name; named_children() would hide it)."""
    return [(name, module) for name, module in prepared._modules.items()
            if name.startswith("activation_post_process_")]


def calibrate(model, crop, run_batches, calibration_keys, engine=DEFAULT_INT8_ENGINE) -> dict:
    """Observe activations while ``run_batches(prepared_model)`` feeds it calibration images.

    Returns the quantization record for the fingerprint (JSON-ready).
    """
    with _quiet():
        prepared = _prepare(model, crop, engine)
        run_batches(prepared)
        observers = _activation_observers(prepared)
        if not observers or any(float(obs.max_val) < float(obs.min_val) for _, obs in observers):
            raise ExtractError("int8 calibration decoded none of its images; check the folder's images "
                               "or use precision=fp32")
        activations = {}
        for name, obs in observers:
            scale, zero_point = obs.calculate_qparams()
            activations[name] = [float(scale.reshape(-1)[0]), int(zero_point.reshape(-1)[0])]
    digest = hashlib.sha256("\n".join(sorted(calibration_keys)).encode()).hexdigest()
    return {"scheme": SCHEME, "engine": engine, "activations": activations,
            "calibration": {"images": len(calibration_keys), "keys_sha256": digest}}


def quantize(model, crop, quantization: dict) -> torch.nn.Module:
    """The int8 network for the recorded activation ranges (runs on the CPU only)."""
    recorded = quantization["activations"]
    engine = quantization.get("engine", "x86")
    with _quiet():
        prepared = _prepare(model, crop, engine)
        observers = _activation_observers(prepared)
        if sorted(name for name, _ in observers) != sorted(recorded):
            raise ExtractError("the cache's int8 calibration does not fit this network (another torch version "
                               "or layer set?); extract into a new cache=")
        fixed = {}  # one fixed observer per original, so shared observers stay shared
        for name, obs in observers:
            if id(obs) not in fixed:
                scale, zero_point = recorded[name]
                fixed[id(obs)] = FixedQParamsObserver(scale, zero_point, dtype=obs.dtype, qscheme=obs.qscheme,
                                                      quant_min=obs.quant_min, quant_max=obs.quant_max)
            setattr(prepared, name, fixed[id(obs)])
        return _Int8Network(convert_fx(prepared).eval(), engine)


class _Int8Network(torch.nn.Module):
    """The quantized network, run with its engine and without the per-call deprecation notice."""

    def __init__(self, network, engine):
        super().__init__()
        self.network = network
        self.engine = engine

    def forward(self, x):
        torch.backends.quantized.engine = self.engine
        with _quiet():
            return self.network(x)
