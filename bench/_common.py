"""What the benchmarks share: a layout-keeping subset of a photo folder, a model timed alone, a
whole `cnncodes` process timed, a child process's peak memory, and the CPU's name.

Each bench is a script (`python bench/NAME.py ...`) importing the installed cnncodes; this module
sits beside them, so `from _common import ...` finds it.
"""
import os
import statistics
import subprocess
import sys
import time

from cnncodes.extract.sources import scan_image_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The peak resident memory of the process that evaluates it, for benches' child processes.
# VmHWM (the high-water mark of this process's own memory), not resource.getrusage's ru_maxrss:
# Linux carries the forking parent's resident size into the child across exec, so a bench parent
# that built a big synthetic cache reported its own size as the child's peak. An expression to
# format into a child's ``python -c`` code; its value is in kB.
VMHWM_KB = "next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM'))"


def _cpuinfo() -> str:
    with open("/proc/cpuinfo") as f:
        return f.read()


def cpu() -> str:
    """This machine's CPU model and the cores this process may use (written beside every figure)."""
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")),
                 "?")
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def isa() -> str:
    """The widest vector instructions a CPU figure depends on: avx512_bf16, avx2 or other."""
    flags = _cpuinfo()
    return "avx512_bf16" if "avx512_bf16" in flags else "avx2" if "avx2" in flags else "other"


def subset_folder(src, limit, dst):
    """A folder of symlinks to `limit` images, taken round-robin over (split folder, class) so a
    subset keeps the source's layout (train/val folders stay train/val)."""
    records = scan_image_folder(src).records
    groups = {}
    for r in records:
        groups.setdefault((r.split, r.label), []).append(r)
    picked = []
    while len(picked) < min(limit, len(records)):
        for items in groups.values():
            if items and len(picked) < limit:
                picked.append(items.pop(0))
    for r in picked:
        target = os.path.join(dst, r.path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            os.symlink(r.abspath, target)
    return picked


def model_only(model, batch, crop, device, precision, channels_last, seconds=20.0):
    """Images/s of ``model`` alone on random input (no decoding), for ``seconds``."""
    import contextlib

    import torch

    from cnncodes.extract.allocator import freed_memory_kept
    from cnncodes.extract.device import PRECISIONS
    from cnncodes.extract.encoder import autocast_context
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=fmt)
    x = torch.randn(batch, 3, crop, crop, device=device).contiguous(memory_format=fmt)
    n, started = 0, None
    # as extract runs it: on the CPU, freed activations kept for the next batch
    kept = freed_memory_kept() if device.type == "cpu" else contextlib.nullcontext()
    with kept, torch.inference_mode(), autocast_context(device, PRECISIONS[precision]):
        model(x)  # warm-up
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or n < 2 * batch:
            model(x)
            n += batch
            if device.type == "cuda":
                torch.cuda.synchronize()
    return n / (time.perf_counter() - started)



def timed(argv, repeat):
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, os.path.join(ROOT, "pipeline.py"), *argv], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)
