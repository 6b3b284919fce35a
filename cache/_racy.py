"""Racily clean files: stat data a re-run must not trust, handled as git's index does.

A re-run skips a file whose (size, mtime, inode) equal the cached ones. Timestamps have a
granularity (whole seconds on FAT, ext3, HFS+ and many network shares; the kernel's tick of a few
ms elsewhere), so a file rewritten in place with the same size, within the same tick as the mtime
the cache keeps, looks unchanged. That can happen only when the file's bytes were read within that
tick of its mtime: a later change gets a later mtime. Such a row's stat is *smudged* when
committed (git sets the size to 0; here -1, which no file has), so the next run re-reads the
file: its bytes are hashed, and decoded only when they changed. The decoding worker notes when
each read began, so only files read that soon after they were written pay the re-read.
"""
COARSE_WINDOW_NS = 2_000_000_000  # an mtime in whole seconds: FAT keeps 2 s
FINE_WINDOW_NS = 10_000_000       # otherwise: a 100 Hz kernel clock ticks every 10 ms
SMUDGED_SIZE = -1


def window_ns(mtime_ns: int) -> int:
    return COARSE_WINDOW_NS if mtime_ns % 1_000_000_000 == 0 else FINE_WINDOW_NS


def is_racy(stat, observed_ns: int) -> bool:
    """Were the file's bytes read (from ``observed_ns`` on) within its mtime's granularity?"""
    mtime_ns = int(stat[1])
    return mtime_ns + window_ns(mtime_ns) > observed_ns


def untrusted_stat(stat, observed_ns: int) -> tuple:
    """The stat to store: as it is, or with the size smudged when it cannot be trusted later."""
    stat = tuple(map(int, stat))  # one call per photo of a run: no generator
    return (SMUDGED_SIZE,) + stat[1:] if is_racy(stat, observed_ns) else stat
