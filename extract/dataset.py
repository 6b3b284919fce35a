"""The DataLoader side of the runner: workers read, hash, decode and transform; batches carry
failures, content keys and unchanged files along."""
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch.utils.data import Dataset

from .decoding import DEFAULT_MAX_PIXELS, DecodeError, decode_rgb
from .sources import read_and_hash


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


class Item(NamedTuple):
    """What a decoding worker returns for record ``index`` (a NamedTuple: pickled between processes)."""
    index: int
    image: object = None     # uint8 tensor [3, H, W] ([1 + K, 3, H, W] with views), a RawJpeg, or None
    failure: str = None      # why there is no image
    key: str = ""            # SHA-256 hex of the file's bytes ("" when it could not be read)
    unchanged: bool = False  # the bytes hash to the key the cache already holds: nothing decoded
    read_ns: int = 0         # when the file's read began (wall clock): what tells a racily clean stat


class ImageRecords(Dataset):
    """Item i for record i. A record the cache already ``known``s (a file whose stat changed) is
    not decoded when its bytes still hash to the known key. An image is a uint8 tensor, or a
    RawJpeg left for the device to decode."""

    def __init__(self, records, load, views=None):
        self.records = records
        self.load = load
        self.views = views   # a ViewPlan (extract/views.py): train records come back as [1 + K, 3, H, W]

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i) -> Item:
        record, started = self.records[i], time.time_ns()
        try:
            data, key = read_and_hash(record)
        except OSError as exc:
            return Item(i, failure=f"cannot read: {exc.strerror or exc}", read_ns=started)
        known = getattr(record, "known", None)
        if known is not None and known.key == key:
            return Item(i, key=key, unchanged=True, read_ns=started)
        try:
            count = self.views.count(record, key) if self.views is not None else 0
            if count:
                image = self.views.stack(self.load.decode(record.abspath, data), key, count)
            else:
                image = self.load(record.abspath, data)
        except DecodeError as exc:
            return Item(i, failure=str(exc), key=key, read_ns=started)
        except Exception as exc:  # a file that breaks the transform is one failure, not a crash
            return Item(i, failure=f"cannot preprocess: {type(exc).__name__}: {exc}", key=key, read_ns=started)
        return Item(i, image, key=key, read_ns=started)


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
    start: int = 0       # the batch holds records [start, start + count): a loader batch, in order
    count: int = 0
    ring_number: int = None  # its images are in this batch's slot of the encoder's BatchRing, not in images

    def pin_memory(self):
        self.images = self.images.pin_memory()
        return self


def collate(items, place=torch.stack) -> Batch:
    """The batch of ``items``; ``place`` turns the good images ([3, H, W] each, in order) into
    Batch.images (a BatchRing writes them into shared memory instead)."""
    good, views = [], []
    for item in items:
        if isinstance(item.image, torch.Tensor):  # [3, H, W], or [1 + K, 3, H, W] with views: one row each
            stack = item.image[None] if item.image.dim() == 3 else item.image
            good += [(item.index, image) for image in stack]
            views += range(len(stack))
    jpegs = [(item.index, item.image) for item in items
             if item.image is not None and not isinstance(item.image, torch.Tensor)]
    images = place([t for _, t in good]) if good else torch.empty(0, dtype=torch.uint8)
    return Batch(indices=[i for i, _ in good], images=images,
                 failed=[(item.index, item.failure) for item in items if item.failure is not None],
                 jpegs=jpegs, keys={item.index: item.key for item in items},
                 unchanged=[item.index for item in items if item.unchanged],
                 views=views if any(views) else None, read_ns={item.index: item.read_ns for item in items},
                 start=min(item.index for item in items), count=len(items))
