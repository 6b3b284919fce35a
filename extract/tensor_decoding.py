"""The tensor decoders: JPEGs decoded by torchvision.io and resized as uint8 tensors, instead of PIL.

`--decoder torchvision`: each DataLoader worker decodes with libjpeg-turbo, on the CPU.
`--decoder gpu`: the workers only read the JPEG bytes and the EXIF orientation; the main process
decodes whole batches on the device (``finish_batch``: torchvision's batched
``decode_jpeg(device='cuda')``, nvJPEG underneath) and resizes them there, so decoding stops
competing for the CPU's cores. Chosen over nvImageCodec and TorchCodec: it comes with the
torchvision that torch's CUDA build already installs (a GPU machine often has no registry to
fetch another package from), its batched call is one line, and its CPU twin is the torchvision
decoder's own call. That path runs on the CPU too (``EncodePlan(decode_on_device=True)``, with
any batched decoder given to ``finish_batch``), which is how tests check it.

Files that are not JPEGs, or that the device cannot decode (a damaged file: the batch is then
decoded one by one, and the file alone goes to the CPU), go through PIL (decoding.py) and then the
same tensor resize, so neither decoder refuses an image PIL accepts.
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
    data: bytes          # the file's bytes (plain bytes: pickled inline, no shared-memory handshake per file)
    orientation: int     # EXIF orientation 1..8 (1: as stored)

    def tensor(self) -> torch.Tensor:
        """uint8 [n_bytes] over the bytes (read-only: the decoders only read it)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "non-writable buffer"
            return torch.frombuffer(self.data, dtype=torch.uint8)


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

    With ``defer_jpegs`` (the gpu decoder), JPEGs come back as RawJpeg for ``finish_batch`` instead.
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
            if self.defer_jpegs:
                return RawJpeg(path, bytes(data), orientation)
            with _quiet():
                encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                try:
                    return self.transform(tvio.decode_jpeg(encoded, mode=tvio.ImageReadMode.RGB,
                                                           apply_exif_orientation=True))
                except RuntimeError:
                    pass  # a JPEG libjpeg refuses: PIL decodes it or names the problem
        return self.transform(pil_to_tensor(decode_rgb(data, self.max_pixels)))


def device_decode(datas, device) -> list:
    """The batched decoder: JPEG bytes (uint8 tensors) -> RGB uint8 [3, H, W] each, on ``device``
    (as stored: orientation is applied after). Raises when any file fails."""
    with _quiet():
        return list(tvio.decode_jpeg(datas, mode=tvio.ImageReadMode.RGB, device=device))


def finish_batch(items, transform, device, max_pixels, decode=None):
    """Decode RawJpeg items on ``device`` in one call, orient, resize and crop them there.

    items: [(position, RawJpeg)]. decode: the batched decoder (``device_decode``; tests give a
    fake). Returns ({position: uint8 [3, crop, crop] on device}, failures). When the batched call
    fails, the files are decoded one by one; a file the device refuses goes through PIL on the CPU.
    """
    decode = decode or device_decode
    datas = [raw.tensor() for _, raw in items]
    try:
        decoded = list(decode(datas, device))
    except Exception:  # one bad file fails the whole call: go one by one
        decoded = [_decode_one(data, device, decode) for data in datas]
    done, failed = {}, []
    for (position, raw), image in zip(items, decoded):
        if image is not None:
            done[position] = transform(orient(image, raw.orientation))
            continue
        try:
            done[position] = transform(pil_to_tensor(decode_rgb(raw.data, max_pixels))).to(device)
        except DecodeError as exc:
            failed.append((position, str(exc)))
    return done, failed


def _decode_one(data, device, decode):
    try:
        return decode([data], device)[0]
    except Exception:
        return None
