"""Who may still read a retired segment: a writer deletes one only when no reader can need it.

A merge replaces segments by a new one and publishes a cache file that no longer names them.
A reader that opened the cache file before that publish still holds the old file, whose virtual
datasets name the old segments and open them lazily, on first read; deleted under it, its rows
would read as fill values. So retired segments stay until no reader may hold an old cache file
(as SQLite's WAL keeps frames a reader still needs, and git's gc spares what is recent):

- ``open_cache`` registers: it holds a shared flock on ``<cache>.shards/readers`` while open,
  taken *before* it opens the cache file. A writer that cannot get the exclusive lock defers.
- Plain h5py (or any HDF5 reader) cannot register, so the writer also looks, as ``fuser`` does,
  for any local process with an open descriptor on an older version of the cache file.

Deferred segments are plain unreferenced files; every later writer session retries them.
"""
import contextlib
import fcntl
import os

from ._manifest import segment_folder

READERS_FILE = "readers"


def reader_registration(cache_path):
    """An open descriptor holding a shared lock for a reader, or None where the folder cannot take one
    (a packed cache has no folder; read-only media cannot change under the reader anyway)."""
    folder = segment_folder(cache_path)
    if not os.path.isdir(folder):
        return None
    path = os.path.join(folder, READERS_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # a writer holds it exclusively only while it deletes files
    except OSError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def no_readers(cache_path):
    """Yields True, with new readers held off, when no reader may hold an old version of the cache
    file; yields False when one may (then nothing may be deleted)."""
    path = os.path.join(segment_folder(cache_path), READERS_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False  # an open_cache reader is registered
            return
        yield not old_versions_open(cache_path)
    finally:
        os.close(fd)


def old_versions_open(cache_path) -> bool:
    """Does any process here hold an open descriptor on a version of the cache file other than the
    current one (a file since replaced by a publish)? Read from /proc; False where there is none."""
    target = os.path.realpath(os.fspath(cache_path))  # what /proc's links name
    try:
        current = os.stat(target)
        current = (current.st_dev, current.st_ino)
    except OSError:
        current = None
    if not os.path.isdir("/proc/self/fd"):
        return False
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or another user's process we may not look into
            continue
        for fd in fds:
            link = os.path.join(fd_dir, fd)
            try:
                name = os.readlink(link)
                if name not in (target, f"{target} (deleted)"):
                    continue
                held = os.stat(link)  # the open file itself, even once it is unlinked
            except OSError:
                continue
            if (held.st_dev, held.st_ino) != current:
                return True
    return False
