"""The torchvision decoder: the worker path, the device path (run here on the CPU) and PIL fallbacks."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2.functional import pil_to_tensor

from conftest import FAST_VGG, make_image, run_cli
from cnncodes.cache import open_cache
from cnncodes.extract import ExtractConfig, run_extract
from cnncodes.extract.backbones import get_backbone
from cnncodes.extract.decoding import DecodeError
from cnncodes.extract.errors import ExtractError
from cnncodes.extract.config import RunOptions
from cnncodes.extract.encoder import EncodePlan, encode_batches
from cnncodes.extract.sources import Record
from cnncodes.extract.tensor_decoding import RawJpeg, finish_batch, orient
from cnncodes.extract.weights import resolve_weights

PRE = get_backbone("vgg16").preprocess.with_crop(32)


def _with_orientation(path, orientation, size=(40, 24)):
    rng = np.random.default_rng(orientation)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, quality=95)
    return str(path)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pil_exif_transpose(orientation):
    img = Image.fromarray(np.arange(5 * 3 * 3, dtype=np.uint8).reshape(5, 3, 3))
    img.getexif()[0x0112] = orientation
    expected = pil_to_tensor(ImageOps.exif_transpose(img))
    assert torch.equal(orient(pil_to_tensor(img), orientation), expected)


def test_worker_path_follows_exif_and_stays_close_to_pil(tmp_path):
    path = _with_orientation(tmp_path / "o6.jpg", 6, size=(64, 48))
    pil = PRE.loader(10**8)(path)
    tv = replace(PRE, decoder="torchvision").loader(10**8)(path)
    assert tv.shape == pil.shape == (3, 32, 32)
    assert (tv.float() - pil.float()).abs().mean() < 6  # same recipe, two decoders and resizers


def test_worker_path_falls_back_to_pil_and_keeps_its_reasons(tmp_path):
    load = replace(PRE, decoder="torchvision").loader(10**8)
    for mode, fmt, name in (("RGBA", "PNG", "a.png"), ("CMYK", "JPEG", "c.jpg"), ("L", "JPEG", "g.jpg")):
        assert load(make_image(str(tmp_path / name), seed=1, mode=mode, fmt=fmt)).shape == (3, 32, 32)
    good = make_image(str(tmp_path / "good.jpg"), seed=1, size=(200, 200))
    (tmp_path / "trunc.jpg").write_bytes(open(good, "rb").read()[:2000])
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DecodeError, match="cannot decode"):
        load(str(tmp_path / "trunc.jpg"))
    with pytest.raises(DecodeError, match="empty"):
        load(str(tmp_path / "empty.jpg"))


def test_device_path_on_the_cpu_equals_the_worker_path(tmp_path):
    """What CUDA runs (bytes from workers, one decode call per batch, merge in record order),
    run on the CPU: the same pixels, so the same codes, as decoding in the workers."""
    paths = [_with_orientation(tmp_path / f"o{o}.jpg", o) for o in (1, 6, 3, 8)]
    paths.insert(2, make_image(str(tmp_path / "p.png"), seed=3, fmt="PNG"))  # decoded in the worker
    good = make_image(str(tmp_path / "good.jpg"), seed=1, size=(200, 200))
    (tmp_path / "trunc.jpg").write_bytes(open(good, "rb").read()[:2000])
    paths.insert(1, str(tmp_path / "trunc.jpg"))
    records = [Record(path=p, abspath=p, label=None) for p in paths]
    spec = get_backbone("vgg16")
    model = spec.build(resolve_weights(spec, "random"), ("fc7",))
    pre = replace(PRE, decoder="torchvision")
    runs = {}
    for on_device in (False, True):
        batches = list(encode_batches(model, pre, records, RunOptions(batch_size=7, workers=0),
                                      EncodePlan(torch.device("cpu"), decode_on_device=on_device)))
        assert len(batches) == 1
        runs[on_device] = batches[0]
    worker, device = runs[False], runs[True]
    assert device.indices == worker.indices == [0, 2, 3, 4, 5]
    assert [i for i, _ in device.failed] == [i for i, _ in worker.failed] == [1]
    assert "cannot decode" in device.failed[0][1]
    np.testing.assert_array_equal(device.codes["fc7"], worker.codes["fc7"])


def test_finish_batch_decodes_one_call_and_reports_failures(tmp_path):
    good = make_image(str(tmp_path / "good.jpg"), seed=1, size=(200, 200))
    (tmp_path / "trunc.jpg").write_bytes(open(good, "rb").read()[:2000])
    items = [(i, RawJpeg(p, open(p, "rb").read(), 1)) for i, p in enumerate([good, str(tmp_path / "trunc.jpg")])]
    done, failed = finish_batch(items, PRE.tensor_transform(), torch.device("cpu"), 10**8)
    assert list(done) == [0] and done[0].shape == (3, 32, 32)
    assert failed[0][0] == 1 and "cannot decode" in failed[0][1]


def test_decoder_is_recorded_and_never_mixed(image_folder, tmp_path):
    cache = tmp_path / "tv.h5"
    run_cli("extract", image_folder, "--cache", cache, *FAST_VGG, "--decoder", "torchvision")
    with open_cache(cache) as c:
        assert c.fingerprint.preprocess["decoder"] == "torchvision" and len(c.paths) == 18
    kept = run_cli("extract", image_folder, "--cache", cache, *FAST_VGG)  # the cache's decoder, by default
    assert "skipped 18 already cached" in kept.stdout
    out = run_cli("extract", image_folder, "--cache", cache, *FAST_VGG, "--decoder", "pil", check=False)
    assert out.returncode == 2 and "preprocess" in out.stderr
    with pytest.raises(ExtractError, match="jpeg_draft=True works with decoder=pil"):
        run_extract(ExtractConfig(str(image_folder), str(tmp_path / "x.h5"), weights="random",
                                  decoder="torchvision", jpeg_draft=True))
