"""The DataLoader side of the runner: workers decode and transform, batches carry failures along."""
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from .decoding import DEFAULT_MAX_PIXELS, DecodeError, decode_rgb


class ImageRecords(Dataset):
    """Item i: (i, uint8 tensor [3, H, W] or None, failure reason or None)."""

    def __init__(self, records, transform, max_pixels=DEFAULT_MAX_PIXELS, draft_size=None):
        self.records = records
        self.transform = transform
        self.max_pixels = max_pixels
        self.draft_size = draft_size

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        try:
            img = decode_rgb(self.records[i].abspath, self.max_pixels, self.draft_size)
            return i, self.transform(img), None
        except DecodeError as exc:
            return i, None, str(exc)
        except Exception as exc:  # a file that breaks the transform is one failure, not a crash
            return i, None, f"cannot preprocess: {type(exc).__name__}: {exc}"


@dataclass
class Batch:
    indices: list        # record indices of the rows in images, in order
    images: torch.Tensor  # uint8 [n, 3, H, W]
    failed: list         # (record index, reason)

    def pin_memory(self):
        self.images = self.images.pin_memory()
        return self


def collate(items) -> Batch:
    good = [(i, t) for i, t, _ in items if t is not None]
    failed = [(i, reason) for i, t, reason in items if t is None]
    images = torch.stack([t for _, t in good]) if good else torch.empty(0, dtype=torch.uint8)
    return Batch(indices=[i for i, _ in good], images=images, failed=failed)
