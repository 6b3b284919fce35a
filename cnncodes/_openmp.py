"""OpenMP threads that stop spinning soon after the network's last operator.

torch's CPU kernels run on libgomp's threads, which spin for about 300,000 iterations (several
milliseconds here) after each parallel region before they sleep. Between operators that keeps
them ready; between batches, while extract waits for its decoders, a spinning thread holds a
core the idle-priority decoders (extract/workers.py) would otherwise use. At 10,000 iterations
(well above the gaps between one network's operators) mobilenet_v3_small's extract went from
389 to 418 images/s (mean of 8 runs each, alternating) and the network alone kept its speed
(docs/benchmarks.md). libgomp reads the setting once, when torch loads it: so it is set as a
default when cnncodes is imported before torch, and a value the user set is kept.
"""
import os
import sys

SPIN_COUNT = "10000"


def spin_briefly() -> bool:
    """Set GOMP_SPINCOUNT for the torch this process will load, unless it is loaded already or the
    user chose a value (or a wait policy). Returns whether it was set."""
    if "torch" in sys.modules or "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True
