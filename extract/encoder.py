"""The compute side of the runner: batches of decoded images in, codes out, on one device.

Shared by extract (codes go to the cache) and predict (codes go to a classifier).
"""
import contextlib
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from .dataset import ImageRecords, collate
from .decoding import DEFAULT_MAX_PIXELS
from .device import PRECISIONS


@dataclass
class EncodedBatch:
    indices: list   # positions in the record list of the rows in codes
    codes: dict     # layer -> float32 numpy [len(indices), D]
    failed: list    # (position, reason)

    def __len__(self):
        return len(self.indices) + len(self.failed)


def encode_batches(model, preprocess, records, device, precision="fp32", batch_size=32, workers=0,
                   channels_last=True, max_pixels=DEFAULT_MAX_PIXELS):
    """Yield EncodedBatch for consecutive batches of records (objects with .abspath)."""
    dataset = ImageRecords(records, preprocess.pil_transform(), max_pixels)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format).eval()
    normalize = preprocess.normalizer(device)
    autocast_dtype = PRECISIONS[precision]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    with torch.inference_mode():
        for batch in loader:
            codes = {}
            if batch.indices:
                x = normalize(batch.images.to(device, non_blocking=True)).contiguous(memory_format=memory_format)
                with autocast_context(device, autocast_dtype):
                    out = model(x)
                codes = {k: v.float().cpu().numpy() for k, v in out.items()}
            yield EncodedBatch(batch.indices, codes, batch.failed)


def autocast_context(device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
