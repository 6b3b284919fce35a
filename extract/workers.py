"""Decoding workers die with the process that started them.

A DataLoader worker notices a dead parent only when its queue read times out (torch checks every
5 s), so after a ``kill -9`` of the main process orphaned workers went on decoding and holding
memory and files for seconds. On Linux the kernel can deliver a signal to a child the moment its
parent dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere torch's own check remains.
"""
import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


class ExitWithParent:
    """A DataLoader ``worker_init_fn``: SIGKILL this worker when the process that made it dies.

    Picklable (for spawned workers); ``parent`` is the pid of the process that builds the loader.
    """

    def __init__(self, parent=None):
        self.parent = os.getpid() if parent is None else parent

    def __call__(self, worker_id):
        if not sys.platform.startswith("linux"):
            return
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            return
        if os.getppid() != self.parent:  # the parent died before the request took effect
            os._exit(1)
