"""Opening one image file: an RGB PIL image, or a DecodeError saying why not. Nothing else."""
import contextlib
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Refuse images beyond this many pixels (a decompression bomb or a corrupt header); 100 MP is a
# 10000x10000 photo, far beyond anything a 224-pixel network input needs.
DEFAULT_MAX_PIXELS = 100_000_000


class DecodeError(Exception):
    """The file cannot be used as an image; str(error) is the reason recorded in the cache."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit grey: scale to 8 bits instead of clipping everything above 255 to white.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels become white, not whatever colour hides under alpha 0.
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


@contextlib.contextmanager
def _reasons():
    """Turn what PIL raises for a bad file into a DecodeError with a reason for the cache."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError("not an image (no decoder recognises its contents)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"too large: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DecodeError(f"cannot decode: {exc}") from None


def _open_checked(source, max_pixels) -> Image.Image:
    """source: a path, or the file's bytes (read once by the worker, which also hashes them)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise DecodeError("empty file (0 bytes)")
        img = Image.open(io.BytesIO(source))
    else:
        with open(source, "rb") as f:
            head = f.read(1)
        if not head:
            raise DecodeError("empty file (0 bytes)")
        img = Image.open(source)
    width, height = img.size
    if width * height > max_pixels:
        raise DecodeError(f"too large: {width}x{height} pixels exceeds the limit of {max_pixels}")
    return img


def open_header(source, max_pixels=DEFAULT_MAX_PIXELS) -> Image.Image:
    """The image at path opened lazily (header read, pixels not decoded), after the same checks
    and with the same reasons as decode_rgb."""
    with _reasons():
        return _open_checked(source, max_pixels)


def decode_rgb(source, max_pixels=DEFAULT_MAX_PIXELS, draft_size=None) -> Image.Image:
    """The first frame of the image (a path or the file's bytes), EXIF orientation applied, as RGB.

    draft_size: for JPEGs, let libjpeg decode at a reduced scale as long as both sides stay at
    least this large (much faster for big photos; the result differs slightly from a full decode).
    """
    with _reasons():
        img = _open_checked(source, max_pixels)
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
