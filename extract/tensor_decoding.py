"""The torchvision decoder (`--decoder torchvision`): JPEGs decoded by torchvision.io and
resized as uint8 tensors, instead of PIL.

On the CPU each DataLoader worker decodes with libjpeg-turbo. On CUDA the workers only read the
JPEG bytes and the EXIF orientation; the main process decodes whole batches with nvJPEG and
resizes on the GPU (``finish_batch``), so decoding stops competing for the CPU cores. That path
runs on the CPU too (``EncodePlan(decode_on_device=True)``), which is how tests check it.

Files that are not JPEGs, or that torchvision cannot decode, go through PIL (decoding.py) and
then the same tensor resize, so the decoder never refuses an image PIL accepts.
"""
import contextlib
import warnings
from dataclasses import dataclass

import torch
import torchvision.io as tvio
from torchvision.transforms.v2.functional import pil_to_tensor

from .decoding import DecodeError, decode_rgb, open_header

EXIF_ORIENTATION = 0x0112


@contextlib.contextmanager
def _quiet():
    """torchvision 0.29 marks its decoders deprecated in favour of TorchCodec (see docs/benchmarks.md)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        yield


@dataclass
class RawJpeg:
    """What a worker hands over for decoding on the device: the file's bytes and orientation."""
    path: str
    data: torch.Tensor   # uint8 [n_bytes]
    orientation: int     # EXIF orientation 1..8 (1: as stored)


def probe(source, max_pixels):
    """(format, EXIF orientation) from the header alone; decoding.py's checks and reasons."""
    img = open_header(source, max_pixels)
    try:
        with img:
            orientation = img.getexif().get(EXIF_ORIENTATION, 1) if img.format == "JPEG" else 1
            return img.format, orientation if orientation in range(1, 9) else 1
    except Exception:
        return None, 1  # unreadable metadata: let the PIL path decode it or name the problem


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation to [C, H, W], as PIL's ImageOps.exif_transpose does."""
    h, w = 1, 2
    if orientation == 2:
        return image.flip(w)
    if orientation == 3:
        return image.flip(h).flip(w)
    if orientation == 4:
        return image.flip(h)
    if orientation == 5:
        return image.transpose(h, w)
    if orientation == 6:
        return image.transpose(h, w).flip(w)   # 90 degrees clockwise
    if orientation == 7:
        return image.transpose(h, w).flip(h).flip(w)
    if orientation == 8:
        return image.transpose(h, w).flip(h)   # 90 degrees counter-clockwise
    return image


class TensorLoader:
    """(path, bytes) -> uint8 [3, crop, crop] via torchvision.io (runs in DataLoader workers).

    With ``defer_jpegs`` (CUDA), JPEGs come back as RawJpeg for ``finish_batch`` instead.
    """

    def __init__(self, transform, max_pixels, defer_jpegs=False):
        self.transform = transform
        self.max_pixels = max_pixels
        self.defer_jpegs = defer_jpegs

    def __call__(self, path, data: bytes = None):
        if data is None:
            with open(path, "rb") as f:
                data = f.read()
        fmt, orientation = probe(data, self.max_pixels)
        if fmt == "JPEG":
            with _quiet():
                encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                if self.defer_jpegs:
                    return RawJpeg(path, encoded, orientation)
                try:
                    return self.transform(tvio.decode_jpeg(encoded, mode=tvio.ImageReadMode.RGB,
                                                           apply_exif_orientation=True))
                except RuntimeError:
                    pass  # a JPEG libjpeg refuses: PIL decodes it or names the problem
        return self.transform(pil_to_tensor(decode_rgb(data, self.max_pixels)))


def finish_batch(items, transform, device, max_pixels):
    """Decode RawJpeg items on ``device`` in one call, orient, resize and crop them there.

    items: [(position, RawJpeg)]. Returns ({position: uint8 [3, crop, crop] on device}, failures).
    A file the device decoder refuses goes through PIL on the CPU instead.
    """
    with _quiet():
        try:
            decoded = list(tvio.decode_jpeg([raw.data for _, raw in items], mode=tvio.ImageReadMode.RGB,
                                            device=device))
        except RuntimeError:  # one bad file fails the whole call: go one by one
            decoded = [_decode_one(raw.data, device) for _, raw in items]
    done, failed = {}, []
    for (position, raw), image in zip(items, decoded):
        if image is not None:
            done[position] = transform(orient(image, raw.orientation))
            continue
        try:
            done[position] = transform(pil_to_tensor(decode_rgb(raw.data.numpy().tobytes(), max_pixels))).to(device)
        except DecodeError as exc:
            failed.append((position, str(exc)))
    return done, failed


def _decode_one(data, device):
    try:
        return tvio.decode_jpeg(data, mode=tvio.ImageReadMode.RGB, device=device)
    except RuntimeError:
        return None
