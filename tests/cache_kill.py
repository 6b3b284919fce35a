"""A writer killed with SIGKILL at a chosen point inside its work, in a forked process of its own.

The point is the n-th file operation the writer makes (each ``os.replace``, ``os.remove`` and
``os.fsync``), so a history that kills is replayed exactly and hypothesis can shrink it; at an
fsync the file being flushed may also be cut short first (the bytes a killed ``write`` left). The
child logs, to a file (it survives the kill), each shard it hands to the session with what that
shard changes, each rename it completed and which part of the protocol made it, so the parent
knows exactly what was committed when the kill came.
"""
import os
import pickle
import signal
import stat
import struct
import sys
import traceback
from dataclasses import dataclass, field

from cnncodes.cache import open_for_append

from cache_world import Marks, extract

HOOKED = ("replace", "remove", "fsync")
# the innermost of these on the stack names who made a rename
PARTS = {"_merge": "merge", "migrate_schema1": "migrate", "_write_and_link_unguarded": "shard", "close": "close"}


@dataclass
class KillResult:
    killed: bool
    completed: bool
    error: str = None
    deltas: list = field(default_factory=list)  # the shards handed to the session, in order
    close: object = None                        # the close's Delta (prune, vanished), once reached
    moves: dict = None
    written: int = 0                            # shards whose segment file was renamed into place (shards
                                                # that waited for the writer may share one: group commit)
    close_published: bool = False               # the close's own publish (removals) completed
    events: int = 0                             # file operations made before the kill


def _writer(log_fd):
    def log(record):
        data = pickle.dumps(record)
        os.write(log_fd, struct.pack("<I", len(data)) + data)
    return log


def _part():
    frame = sys._getframe(2)
    while frame is not None:
        part = PARTS.get(frame.f_code.co_name)
        if part is not None and frame.f_code.co_filename.endswith(("append.py", "_migrate.py")):
            return part
        frame = frame.f_back
    return "other"


def _install(at, cut, log):
    count = [0]
    real = {name: getattr(os, name) for name in HOOKED}

    def hooked(name):
        fn = real[name]

        def call(*args, **kwargs):
            count[0] += 1
            if count[0] == at:
                if name == "fsync" and cut is not None:
                    info = os.fstat(args[0])
                    if stat.S_ISREG(info.st_mode):  # a killed write leaves the file short
                        os.ftruncate(args[0], int(info.st_size * cut))
                log(("K", count[0]))
                os.kill(os.getpid(), signal.SIGKILL)
            result = fn(*args, **kwargs)
            if name == "replace":
                log(("R", os.path.basename(os.fspath(args[1])), _part()))
            return result
        return call
    for name in HOOKED:
        setattr(os, name, hooked(name))


def _log_jobs(log):
    """Log how many shards each job the writer starts holds: its segment's rename commits them all."""
    from cnncodes.cache.append import AppendSession
    real = AppendSession._write_and_link

    def write_and_link(session, job):
        log(("J", job.shards))
        return real(session, job)
    AppendSession._write_and_link = write_and_link  # in the forked child only


class _LogMarks(Marks):
    def __init__(self, log):
        self.log = log

    def commit(self, index, delta):
        self.log(("C", index, delta))

    def closing(self, delta, moves):
        self.log(("X", delta, moves))


def run_killed(cache, fingerprint, widths, classes, world, opts, views, dtype, at, cut, log_path) -> KillResult:
    """One extract into ``cache`` in a forked child, SIGKILLed at its ``at``-th file operation."""
    if os.path.exists(log_path):
        os.remove(log_path)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            log = _writer(fd)
            _install(at, cut, log)
            _log_jobs(log)
            with open_for_append(cache, fingerprint, widths, classes, background=opts.background) as session:
                log(("O",))
                extract(session, world, opts, views, dtype, _LogMarks(log))
            log(("D",))
        except BaseException:
            try:
                log(("E", traceback.format_exc()))
            except BaseException:
                pass
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    result = KillResult(killed=os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, completed=False)
    with open(log_path, "rb") as f:
        data = f.read()
    base = os.path.basename(cache)
    at_data, job_shards = 0, 1
    while at_data + 4 <= len(data):
        (n,) = struct.unpack("<I", data[at_data:at_data + 4])
        record = pickle.loads(data[at_data + 4:at_data + 4 + n])
        at_data += 4 + n
        kind = record[0]
        if kind == "C":
            assert record[1] == len(result.deltas)
            result.deltas.append(record[2])
        elif kind == "X":
            result.close, result.moves = record[1], record[2]
        elif kind == "R":
            name, part = record[1], record[2]
            if part == "shard" and name.startswith("seg-"):
                result.written += job_shards
            elif part == "close" and name == base:
                result.close_published = True
        elif kind == "J":
            job_shards = record[1]
        elif kind == "D":
            result.completed = True
        elif kind == "E":
            result.error = record[1]
        elif kind == "K":
            result.events = record[1]
    if not result.killed and not result.completed and result.error is None:
        result.error = f"the writer ended with status {status} and no word"
    return result
