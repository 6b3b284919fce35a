"""Choosing the device, the compute precision and the batch defaults for it."""

import torch

from ..cpu_features import native_bf16, usable_cores
from .errors import ExtractError
from .options import PRECISIONS as PRECISION_NAMES

# Precision name -> autocast dtype. int8 is not autocast: the runner swaps in a quantized network.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": None}
assert set(PRECISIONS) == set(PRECISION_NAMES) - {"auto"}


def pick_device(name="auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ExtractError(f"device={name}: CUDA is not available on this machine; use device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ExtractError(f"device={name}: not a device name; use auto, cpu or cuda") from None


def pick_precision(name, device: torch.device) -> str:
    """auto: fp16 autocast on CUDA (tensor cores); on the CPU bf16 autocast where the CPU has
    native bf16 (faster than fp32, codes at cosine >= 0.9999: docs/benchmarks.md), else fp32."""
    if name == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if native_bf16() else "fp32"
    if name not in PRECISIONS:
        raise ExtractError(f"precision={name}: choose {', '.join(PRECISION_NAMES[:-1])} or {PRECISION_NAMES[-1]}")
    if name == "int8" and device.type != "cpu":
        raise ExtractError(f"precision=int8 runs on the CPU only; on {device.type} use fp16 or bf16, "
                           "or pass device=cpu")
    return name


def default_batch_size(device: torch.device) -> int:
    return 256 if device.type == "cuda" else 32


def default_workers(device: torch.device) -> int:
    """Decoding workers: on CUDA every core but the main process's (a GPU outruns them all: VGG16
    fp16 computes 8,300 images/s on an H200); on the CPU one per core, at the idle priority
    (extract/workers.py), so they decode on whatever the network leaves idle and on every core
    while it waits for a batch."""
    cores = usable_cores()
    return max(1, min(32, cores - 1)) if device.type == "cuda" else max(1, min(8, cores))


def batching(device: torch.device, batch_size=None, workers=None) -> tuple:
    """(batch size, decoding workers): the ones asked for, else this device's defaults."""
    return (batch_size or default_batch_size(device),
            default_workers(device) if workers is None else workers)
