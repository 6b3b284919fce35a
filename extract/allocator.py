"""Freed memory kept for the next batch while a network runs on the CPU (glibc's malloc).

glibc maps each large allocation (above its threshold: 128 KB, rising to at most 32 MB) on its
own and unmaps it when freed, and trims the heap's free top beyond twice that. A network's
activations are freed and allocated again every batch, so each batch faults all their pages in
again, and on a virtual machine a fault costs microseconds. With no allocation mapped on its own
(M_MMAP_MAX 0) and the trim threshold at 1 GiB, freed activations stay in the heap and the next
batch reuses them without a fault: the network alone runs faster (docs/benchmarks.md, "Against
the roofline", has the figures). The cost: memory freed during the run stays with the process
until the run ends, when large blocks are mapped again and ``malloc_trim``
hands the kept memory back (what PyTorch's guides get by preloading jemalloc or tcmalloc, here without
touching how Python starts).
"""
import contextlib
import ctypes
import ctypes.util
import threading

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
DEFAULT_MMAP_MAX = 65536                 # glibc's
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024    # the highest glibc's own adjustment sets on 64-bit systems
KEPT_TRIM_THRESHOLD = 1 << 30

_lock = threading.Lock()
_depth = 0


def _glibc():
    """glibc, or None (macOS, musl, Windows: their allocators keep their own policy)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only
        return libc
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def freed_memory_kept():
    """Within: freed memory stays in this process's heap for reuse (glibc; elsewhere nothing
    changes). Nested and concurrent uses keep it until the last one ends. Processes forked
    within (decoding workers) inherit it."""
    global _depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, KEPT_TRIM_THRESHOLD)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                # Setting any threshold ends glibc's own adjustment for the process's life: leave
                # them where that adjustment takes large blocks (mapped above 32 MB, trimmed above
                # twice that), not at its 128 KB starting point, where a network faults 2-3x more.
                libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                libc.mallopt(M_MMAP_THRESHOLD, MAX_MMAP_THRESHOLD)
                libc.mallopt(M_TRIM_THRESHOLD, 2 * MAX_MMAP_THRESHOLD)
                libc.malloc_trim(0)  # what was kept goes back to the system, free chunks mid-heap too
