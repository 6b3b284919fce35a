"""The DataLoader side of the runner: workers read, hash, decode and transform; batches carry
failures, content keys and unchanged files along."""
import hashlib
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from .decoding import DEFAULT_MAX_PIXELS, DecodeError, decode_rgb


class PilLoader:
    """(path, bytes) -> uint8 tensor [3, crop, crop] through PIL (the default decoder)."""

    def __init__(self, transform, max_pixels=DEFAULT_MAX_PIXELS, draft_size=None):
        self.transform = transform
        self.max_pixels = max_pixels
        self.draft_size = draft_size

    def __call__(self, path, data=None):
        """data: the file's bytes when the caller has read them already (it hashes them too)."""
        return self.transform(self.decode(path, data))

    def decode(self, path, data=None):
        """The RGB PIL image, before any transform."""
        return decode_rgb(path if data is None else data, self.max_pixels, self.draft_size)


def read_and_hash(path):
    """(bytes, SHA-256 hex): the one read of an image file; the key is what identifies its content."""
    with open(path, "rb") as f:
        data = f.read()
    return data, hashlib.sha256(data).hexdigest()


# The file's bytes hash to the key the cache already holds: no need to decode. A string, so it
# survives pickling between DataLoader workers and the main process.
UNCHANGED = "unchanged"


class ImageRecords(Dataset):
    """Item i: (i, network input or None or UNCHANGED, failure reason or None, content key, the
    wall-clock ns at which the file's read began: what tells a racily clean stat, cache/racy.py).

    The input is a uint8 tensor [3, H, W], or a RawJpeg left for the device to decode. A record
    the cache already ``known``s (a file whose stat changed) is not decoded when its bytes still
    hash to the known key.
    """

    def __init__(self, records, load, views=None):
        self.records = records
        self.load = load
        self.views = views   # a ViewPlan (extract/views.py): train records come back as [1 + K, 3, H, W]

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        started = time.time_ns()
        return self._item(i) + (started,)

    def _item(self, i):
        record = self.records[i]
        try:
            data, key = read_and_hash(record.abspath)
        except OSError as exc:
            return i, None, f"cannot read: {exc.strerror or exc}", ""
        known = getattr(record, "known", None)
        if known is not None and known.key == key:
            return i, UNCHANGED, None, key
        try:
            count = self.views.count(record, key) if self.views is not None else 0
            if count:
                return i, self.views.stack(self.load.decode(record.abspath, data), key, count), None, key
            return i, self.load(record.abspath, data), None, key
        except DecodeError as exc:
            return i, None, str(exc), key
        except Exception as exc:  # a file that breaks the transform is one failure, not a crash
            return i, None, f"cannot preprocess: {type(exc).__name__}: {exc}", key


@dataclass
class Batch:
    indices: list        # record index of each row of images, in order (repeated for a record's views)
    images: torch.Tensor  # uint8 [n, 3, H, W]
    failed: list         # (record index, reason)
    jpegs: list = ()     # (record index, RawJpeg): still to decode on the device
    keys: dict = field(default_factory=dict)    # record index -> content key (every item)
    unchanged: list = field(default_factory=list)  # record indices whose bytes match the cache
    views: list = None   # view index of each row of images (0: the centre view); None: all centre
    read_ns: dict = field(default_factory=dict)  # record index -> when its file's read began (ns)

    def pin_memory(self):
        self.images = self.images.pin_memory()
        return self


def collate(items) -> Batch:
    good, views = [], []
    for i, t, *_ in items:
        if isinstance(t, torch.Tensor):  # [3, H, W], or [1 + K, 3, H, W] with views: one row each
            stack = t[None] if t.dim() == 3 else t
            good += [(i, image) for image in stack]
            views += range(len(stack))
    jpegs = [(i, t) for i, t, *_ in items if t is not None and not isinstance(t, (torch.Tensor, str))]
    failed = [(i, reason) for i, t, reason, *_ in items if t is None]
    images = torch.stack([t for _, t in good]) if good else torch.empty(0, dtype=torch.uint8)
    return Batch(indices=[i for i, _ in good], images=images, failed=failed, jpegs=jpegs,
                 keys={i: key for i, _, _, key, _ in items}, unchanged=[i for i, t, *_ in items if isinstance(t, str)],
                 views=views if any(views) else None, read_ns={i: ns for i, *_, ns in items})
