"""One writer per cache: an advisory lock the kernel drops when the holder dies (even by SIGKILL)."""
import contextlib
import fcntl
import os

from .errors import CacheError, CacheLocked


def lock_path(cache_path) -> str:
    """The lock lives in the cache's one sidecar folder, beside the segment files."""
    folder = f"{cache_path}.shards"
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, "lock")


def check_writable(cache_path) -> None:
    """Fail at once, in one line, where the cache (or its sidecar folder) cannot be written."""
    cache_path = os.fspath(cache_path)
    probe = f"{cache_path}.shards"
    try:
        os.makedirs(probe, exist_ok=True)
        unique = f"probe-{os.getpid()}.tmp"  # never a name another process may be using
        for path in (os.path.join(probe, unique), f"{cache_path}.{unique}"):
            with open(path, "wb"):
                pass
            os.remove(path)
    except OSError as exc:
        raise CacheError(f"{cache_path}: cannot write the cache there ({exc.strerror or exc}); pass a --cache "
                         "in a writable folder") from None


@contextlib.contextmanager
def cache_lock(cache_path):
    check_writable(cache_path)
    path = lock_path(cache_path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise CacheLocked(
                f"{cache_path}: another extract is writing this cache (pid {holder}); "
                "wait for it to finish, stop it, or pass a different --cache") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
