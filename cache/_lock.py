"""One writer per cache: a lock owned by the process that took it, and by nothing it forks.

Why not ``flock``: a flock belongs to the open file description, and every forked child (the
DataLoader's decoding workers) shares it, so after a ``kill -9`` of the main process the orphaned
workers kept the lock for seconds and an immediate restart was refused, naming a dead pid.
POSIX record locks (``fcntl``/``lockf``) belong to the process: ``fork`` does not pass them on, and
the kernel drops them the moment their process dies, whatever children it leaves. Their one trap
(closing *any* descriptor of the file in the process drops the lock) is avoided by opening the
lock file exactly once per held lock; a second lock of the same cache in this process is refused
like another process's.
"""
import contextlib
import fcntl
import os
import struct
import threading

from .errors import CacheError, CacheLocked
from ._manifest import segment_folder

_held = set()             # lock files this process holds (by device and inode)
_held_guard = threading.Lock()


def lock_path(cache_path) -> str:
    """The lock lives in the cache's one sidecar folder, beside the segment files."""
    folder = segment_folder(cache_path)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, "lock")


def check_writable(cache_path) -> None:
    """Fail at once, in one line, where the cache (or its sidecar folder) cannot be written."""
    cache_path = os.fspath(cache_path)
    probe = segment_folder(cache_path)
    try:
        os.makedirs(probe, exist_ok=True)
        unique = f"probe-{os.getpid()}.tmp"  # never a name another process may be using
        for path in (os.path.join(probe, unique), f"{cache_path}.{unique}"):
            with open(path, "wb"):
                pass
            os.remove(path)
    except OSError as exc:
        raise CacheError(f"{cache_path}: cannot write the cache there ({exc.strerror or exc}); pass a cache= "
                         "in a writable folder") from None


class WriteLock:
    """A held write lock of one cache (what ``cache_lock`` yields); pass it on to
    ``open_for_append(..., lock=...)`` so the session does not take a second one."""

    def __init__(self, cache_path):
        self.cache_path = os.fspath(cache_path)


@contextlib.contextmanager
def cache_lock(cache_path):
    """Hold the cache's write lock, or raise CacheLocked naming the live process that holds it."""
    cache_path = os.fspath(cache_path)
    check_writable(cache_path)
    fd, path, identity = _acquire(cache_path)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield WriteLock(cache_path)
        finally:
            _remove_if_nothing_written(cache_path, path)
    finally:
        _release(fd, identity)


def _acquire(cache_path, tries=3) -> tuple:
    """(descriptor, lock path, identity) with the lock held. A lock file removed by a run that
    wrote nothing (``_remove_if_nothing_written``) after we opened it is no lock: open the new one."""
    for attempt in range(tries):
        path = lock_path(cache_path)
        with _held_guard:  # checked before a descriptor is opened: closing one would drop the held lock
            with contextlib.suppress(FileNotFoundError):
                stat = os.stat(path)
                if (stat.st_dev, stat.st_ino) in _held:
                    raise _locked_error(cache_path, f"{os.getpid()}, this process")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the empty folder was removed just now: make it again
                path = lock_path(cache_path)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            stat = os.fstat(fd)
            identity = (stat.st_dev, stat.st_ino)
            _held.add(identity)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(fd) or os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            _release(fd, identity)
            raise _locked_error(cache_path, holder) from None
        if _identity_at(path) == identity:
            return fd, path, identity
        _release(fd, identity)
    raise _locked_error(cache_path, "unknown")


def _release(fd, identity) -> None:
    with _held_guard:  # together: a freed inode may be reused by the next lock file at once
        os.close(fd)  # closing releases the lock
        _held.discard(identity)


def _identity_at(path):
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_dev, stat.st_ino)


def _remove_if_nothing_written(cache_path, path) -> None:
    """A run that wrote nothing to a new cache (refused, failed before its first shard) leaves no
    sidecar folder behind: the lock goes while still held, so a waiting writer sees it vanish
    (``_identity_at``) rather than share a lock on a removed file."""
    folder = os.path.dirname(path)
    with contextlib.suppress(OSError):
        if not os.path.exists(cache_path) and os.listdir(folder) == ["lock"]:
            os.remove(path)
            os.rmdir(folder)


def _locked_error(cache_path, holder) -> CacheLocked:
    return CacheLocked(f"{cache_path}: another extract is writing this cache (pid {holder}); "
                       "wait for it to finish, stop it, or pass a different cache=")


# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid (+ padding)
_FLOCK = "hhqqi4x"


def _holder(fd):
    """The pid holding the lock right now, as the kernel reports it (None where it cannot say)."""
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        l_type, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
    except (OSError, struct.error):
        return None
    return pid if l_type != fcntl.F_UNLCK and pid > 0 else None
