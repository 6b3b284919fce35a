"""The DataLoader side of the runner: workers decode and transform, batches carry failures along."""
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from .decoding import DEFAULT_MAX_PIXELS, DecodeError, decode_rgb


class PilLoader:
    """path -> uint8 tensor [3, crop, crop] through PIL (the default decoder)."""

    def __init__(self, transform, max_pixels=DEFAULT_MAX_PIXELS, draft_size=None):
        self.transform = transform
        self.max_pixels = max_pixels
        self.draft_size = draft_size

    def __call__(self, path):
        return self.transform(decode_rgb(path, self.max_pixels, self.draft_size))


class ImageRecords(Dataset):
    """Item i: (i, network input or None, failure reason or None).

    The input is a uint8 tensor [3, H, W], or a RawJpeg left for the device to decode.
    """

    def __init__(self, records, load):
        self.records = records
        self.load = load

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        try:
            return i, self.load(self.records[i].abspath), None
        except DecodeError as exc:
            return i, None, str(exc)
        except Exception as exc:  # a file that breaks the transform is one failure, not a crash
            return i, None, f"cannot preprocess: {type(exc).__name__}: {exc}"


@dataclass
class Batch:
    indices: list        # record indices of the rows in images, in order
    images: torch.Tensor  # uint8 [n, 3, H, W]
    failed: list         # (record index, reason)
    jpegs: list = ()     # (record index, RawJpeg): still to decode on the device

    def pin_memory(self):
        self.images = self.images.pin_memory()
        return self


def collate(items) -> Batch:
    good = [(i, t) for i, t, _ in items if isinstance(t, torch.Tensor)]
    jpegs = [(i, t) for i, t, _ in items if t is not None and not isinstance(t, torch.Tensor)]
    failed = [(i, reason) for i, t, reason in items if t is None]
    images = torch.stack([t for _, t in good]) if good else torch.empty(0, dtype=torch.uint8)
    return Batch(indices=[i for i, _ in good], images=images, failed=failed, jpegs=jpegs)
