"""Durable file operations: a file is visible under its final name only once complete."""
import contextlib
import errno
import hashlib
import io
import os
import shutil

import h5py

from .errors import DiskFull


def file_sha256(path) -> str:
    """SHA-256 hex of a file's bytes, read in chunks: an image's content key, a weights file's identity."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fsync_dir(path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse to fsync a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def new_hdf5(final_path, sealed=False):
    """An HDF5 file built in memory, then written to ``final_path`` atomically.

    HDF5 never touches the disk: the finished image is written with plain file I/O to a
    temporary name, flushed and renamed. A full disk is then an ordinary OSError (and the
    partial file is removed) instead of an HDF5 handle that fails to close and crashes the
    process at exit. Files built here are bounded (a shard, a capped merge, the small cache file).
    Written with HDF5's 1.10 metadata (checksummed); ``sealed``: with the SHA-256 seal of
    cache/_integrity.py in a user block (the cache file).
    """
    from ._integrity import LIBVER, USERBLOCK, seal
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", libver=LIBVER, userblock_size=USERBLOCK if sealed else None) as f:
        yield f
    if sealed:
        seal(buffer.getbuffer())
    tmp = f"{final_path}.tmp"
    try:
        with open(tmp, "wb") as out:
            out.write(buffer.getbuffer())
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    os.replace(tmp, final_path)
    fsync_dir(os.path.dirname(os.path.abspath(final_path)))


@contextlib.contextmanager
def disk_full_as_one_line(cache_path, needed_bytes):
    """A full disk or quota inside the block becomes DiskFull: one line naming the cache, the free
    space and about what the step needs, saying that what was committed is intact."""
    try:
        yield
    except OSError as exc:
        text = str(exc)
        if getattr(exc, "errno", None) not in (errno.ENOSPC, errno.EDQUOT) and \
                "No space left" not in text and "quota" not in text.lower():
            raise
        folder = os.path.dirname(os.path.abspath(cache_path))
        free = shutil.disk_usage(folder).free
        raise DiskFull(f"{cache_path}: the disk is full ({free / 1e6:.0f} MB free in {folder}; this step "
                       f"needs about {needed_bytes / 1e6:.0f} MB more); every row committed before is intact: "
                       "free some space and re-run the same command to go on") from None
