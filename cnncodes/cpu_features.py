"""What this CPU computes in hardware, as torch's CPU kernels may use it, and how many of its cores
this process may use: one answer for both stages (extract's precision and workers, the audit's
products, the cosine search's threads)."""
import os

# oneDNN's ISA caps (ONEDNN_MAX_CPU_ISA, or its older name DNNL_MAX_CPU_ISA) that leave out bf16:
# capped there, oneDNN runs as on a CPU without it (the way to run an AVX2 machine's code path on a
# newer CPU: ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2).
_ISA_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def native_bf16() -> bool:
    """Does this CPU compute bf16 in hardware (AVX512-BF16 or AMX), as oneDNN is allowed to use it?
    Without it, bf16 is emulated and several times slower than fp32."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if cap in _ISA_WITHOUT_BF16:
        return False
    import torch
    cpu = torch.cpu
    checks = (getattr(cpu, "_is_avx512_bf16_supported", None), getattr(cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)
