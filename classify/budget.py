"""The memory budget of stage two (`--max-memory`): how many codes may be held at once.

Codes larger than the budget are not loaded whole: the linear heads stream them (stream.py), the
other classifiers use a seeded random subsample of rows that fits, and every output says so.
"""
import os
import re

import numpy as np

from ..cache.schema import image_of_rows

from .errors import ClassifyError

# float32 codes, the fit rows' copy and the scaler's copy: what a fit holds at its peak.
COPIES = 3
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text) -> int:
    """'1G', '512M', '2.5G', '1000000' -> bytes."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)i?B?\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise ClassifyError(f"max_memory={text}: give a size such as 1G, 512M or 2.5G")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def memory_budget(max_memory=None) -> int:
    """The one reading of a ``max_memory`` argument: "8G", "512M" or a byte count; None: the
    default share of this machine's memory."""
    if max_memory is None:
        return default_budget()
    if isinstance(max_memory, str):
        return parse_size(max_memory)
    if isinstance(max_memory, bool) or not isinstance(max_memory, (int, float)) or max_memory <= 0:
        raise ClassifyError(f"max_memory={max_memory!r}: give a size such as 1G, 512M or 2.5G, or a byte count")
    return int(max_memory)


def default_budget() -> int:
    """A quarter of the machine's memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def rows_that_fit(n_rows, width, budget) -> int:
    return int(min(n_rows, max(1, budget // (width * 4 * COPIES))))


def subsample_mask(n_rows, keep, seed=0, views=None) -> np.ndarray:
    """A seeded random choice of about ``keep`` rows (at most), as a boolean mask (row order is
    kept). With ``views`` (each row's view index), whole images are chosen: a centre row and its
    augmented views are kept or dropped together."""
    mask = np.zeros(n_rows, dtype=bool)
    rng = np.random.default_rng(seed)
    if views is None or not np.any(views):
        mask[rng.choice(n_rows, size=keep, replace=False)] = True
        return mask
    image = image_of_rows(views)
    sizes = np.bincount(image)
    order = rng.permutation(len(sizes))
    chosen = order[:max(1, int(np.searchsorted(np.cumsum(sizes[order]), keep, side="right")))]
    mask[np.isin(image, chosen)] = True
    return mask


def over_budget_note(data, budget) -> str:
    """The line that says what exceeding ``budget`` means for these codes (a CodesData with a stream)."""
    from .registry import CLASSIFIERS
    streaming = [name for name, spec in CLASSIFIERS.items() if spec.sweeps]
    return (f"note: the codes ({data.rows_total:,} rows x {data.stream.width} float32, held about {COPIES} times while "
            f"fitting) exceed max_memory={budget / 2**30:.2f}G: {' and '.join(streaming)} stream every row in "
            f"loads of up to {data.stream.load_rows:,} rows; the other classifiers fit on a seeded random subsample "
            f"of {data.in_memory_rows():,} rows")
