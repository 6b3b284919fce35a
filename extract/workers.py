"""Decoding workers die with the process that started them, and on the CPU they yield to it.

A DataLoader worker notices a dead parent only when its queue read times out (torch checks every
5 s), so after a ``kill -9`` of the main process orphaned workers went on decoding and holding
memory and files for seconds. On Linux the kernel can deliver a signal to a child the moment its
parent dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere torch's own check remains.

When the network runs on the CPU, it and the workers share the cores. A network's threads meet at
a barrier after every operator, so a worker that the scheduler runs in place of one of them stalls
all of them; the smaller the network, the more barriers a second. Run at the idle priority
(``SCHED_IDLE``), the workers take only the cores the network leaves idle (while it waits for a
batch, and between batches), and then every core: decoding and the network alternate rather than
collide, which is what the roofline 1 / (1/D + 1/M) assumes (bench/roofline_bench.py).
"""
import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


class ExitWithParent:
    """A DataLoader ``worker_init_fn``: SIGKILL this worker when the process that made it dies;
    with ``yield_cores``, also run it at the idle priority (the network computes on the CPU).

    Picklable (for spawned workers); ``parent`` is the pid of the process that builds the loader.
    """

    def __init__(self, parent=None, yield_cores=False):
        self.parent = os.getpid() if parent is None else parent
        self.yield_cores = yield_cores

    def __call__(self, worker_id):
        if self.yield_cores:
            yield_cores()
        if not sys.platform.startswith("linux"):
            return
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            return
        if os.getppid() != self.parent:  # the parent died before the request took effect
            os._exit(1)


def yield_cores() -> str:
    """Run this process at the lowest priority the OS grants without privileges: SCHED_IDLE on
    Linux, else the highest nice value. Returns what was set ("" when neither could be)."""
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return "SCHED_IDLE"
        except OSError:
            pass
    try:
        os.nice(19 - os.nice(0))
        return "nice 19"
    except (OSError, AttributeError):
        return ""
