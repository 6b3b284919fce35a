import numpy as np
import pytest
from PIL import Image

from conftest import make_image
from cnncodes.extract.decoding import DecodeError, decode_rgb


@pytest.mark.parametrize("fmt,ext,mode", [
    ("JPEG", "jpg", "RGB"), ("JPEG", "jpg", "L"), ("JPEG", "jpg", "CMYK"), ("PNG", "png", "RGBA"),
    ("PNG", "png", "P"), ("PNG", "png", "LA"), ("WEBP", "webp", "RGB"), ("BMP", "bmp", "RGB"),
    ("GIF", "gif", "P"), ("TIFF", "tiff", "RGB"), ("TIFF", "tif", "CMYK"),
])
def test_formats_and_modes_become_rgb(tmp_path, fmt, ext, mode):
    path = make_image(str(tmp_path / f"x.{ext}"), seed=0, mode=mode, fmt=fmt)
    img = decode_rgb(path)
    assert img.mode == "RGB" and img.size == (48, 40)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    arr = np.full((10, 12), 32768, dtype=np.uint16)  # mid grey in 16 bits
    path = str(tmp_path / "g16.png")
    Image.fromarray(arr).save(path)
    out = np.asarray(decode_rgb(path))
    assert out.shape == (10, 12, 3)
    assert 120 <= out.mean() <= 135  # clipping would give 255


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # black, fully transparent
    path = str(tmp_path / "t.png")
    Image.fromarray(rgba, "RGBA").save(path)
    assert np.asarray(decode_rgb(path)).min() == 255


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = str(tmp_path / "a.gif")
    frames[0].save(path, save_all=True, append_images=frames[1:])
    r, g, b = np.asarray(decode_rgb(path)).reshape(-1, 3).mean(0)
    assert r > 200 and b < 50


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = str(tmp_path / "rot.jpg")
    img.save(path, exif=exif)
    assert decode_rgb(path).size == (20, 40)


def test_bad_files_give_reasons(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("not an image at all")
    good = make_image(str(tmp_path / "good.jpg"), seed=1, size=(200, 200))
    truncated = tmp_path / "trunc.jpg"
    data = open(good, "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="empty"):
        decode_rgb(str(empty))
    with pytest.raises(DecodeError, match="not an image"):
        decode_rgb(str(text))
    with pytest.raises(DecodeError, match="cannot decode"):
        decode_rgb(str(truncated))
    with pytest.raises(DecodeError, match="too large"):
        decode_rgb(good, max_pixels=100 * 100)


def test_jpeg_draft_decodes_at_reduced_scale(tmp_path):
    path = make_image(str(tmp_path / "big.jpg"), seed=2, size=(1024, 768))
    assert decode_rgb(path).size == (1024, 768)
    small = decode_rgb(path, draft_size=256)
    assert small.size == (512, 384)  # the largest 1/2^k scale keeping both sides >= 256
