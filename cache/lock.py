"""One writer per cache: an advisory lock the kernel drops when the holder dies (even by SIGKILL)."""
import contextlib
import fcntl
import os

from .errors import CacheLocked


def lock_path(cache_path) -> str:
    """The lock lives in the cache's one sidecar folder, beside the shards in flight."""
    folder = f"{cache_path}.shards"
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, "lock")


@contextlib.contextmanager
def cache_lock(cache_path):
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
