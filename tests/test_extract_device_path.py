"""The GPU's paths, run on the CPU: the uint8 ring normalised on the device, codes cast there, and
the gpu decoder's per-image fallback (with a fake batched decoder)."""
import numpy as np
import pytest
import torch
from PIL import Image

from cnncodes.extract import tensor_decoding
from cnncodes.extract.backbones import get_backbone
from cnncodes.extract.config import CodeSpec, RunOptions
from cnncodes.extract.encoder import EncodePlan, encode_batches
from cnncodes.extract.errors import ExtractError
from cnncodes.extract.extractor import Extractor
from cnncodes.extract.sources.records import Record
from cnncodes.extract.tensor_decoding import RawJpeg, finish_batch

CPU = torch.device("cpu")


def _photos(folder, count, size=(90, 70)):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"p{i:02d}.jpg"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def small_network():
    extractor = Extractor.for_new_codes(CodeSpec(backbone="resnet18", weights="random", precision="fp32", crop_size=48),
                                        options=RunOptions(device="cpu", batch_size=4, workers=2))
    return extractor.model, extractor.preprocess


def _codes(model, preprocess, records, workers=2, **plan):
    out = {}
    for batch in encode_batches(model, preprocess, records, RunOptions(batch_size=4, workers=workers),
                                EncodePlan(CPU, **plan)):
        for row, i in enumerate(batch.indices):
            out[i] = {k: v[row] for k, v in batch.codes.items()}
        out.setdefault("failed", []).extend(i for i, _ in batch.failed)
    return out


def test_the_uint8_ring_normalised_on_the_device_gives_the_float_rings_codes(tmp_path, small_network):
    """What CUDA runs (workers copy uint8 images into the ring; normalising and the layout happen
    in the encoder, on its device), run with device=cpu: bit for bit the float ring's codes (the
    same arithmetic), a short last batch and a broken file included; and the codes cast to float16
    on the device are the float32 codes cast by torch."""
    model, preprocess = small_network
    paths = _photos(tmp_path, 9)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    paths.insert(4, str(tmp_path / "broken.jpg"))
    records = [Record(path=p, abspath=p, label=None) for p in paths]
    today = _codes(model, preprocess, records, uint8_ring=False)
    uint8 = _codes(model, preprocess, records, uint8_ring=True)
    half = _codes(model, preprocess, records, uint8_ring=True, codes_dtype=torch.float16)
    assert today["failed"] == uint8["failed"] == half["failed"] == [4]
    assert set(today) == set(uint8) == set(half) and len(today) == 10
    for i in (k for k in today if k != "failed"):
        for layer, code in today[i].items():
            np.testing.assert_array_equal(uint8[i][layer], code)
            assert half[i][layer].dtype == np.float16
            np.testing.assert_array_equal(half[i][layer], torch.from_numpy(code).to(torch.float16).numpy())


def test_normalising_in_the_networks_precision_is_the_float32_batch_rounded_once():
    """On a GPU the input is normalised in float16 (half the bytes the first layer reads): computed
    in float32, rounded once, so within float16's rounding of the float32 batch, in either layout."""
    preprocess = get_backbone("resnet18").preprocess
    plain = preprocess.normalizer("cpu")
    half = preprocess.normalizer("cpu", reuse_buffers=True, dtype=torch.float16)
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for layout in (torch.channels_last, torch.contiguous_format):
        for source in (x, x.contiguous(memory_format=torch.channels_last)):
            out = half(source, layout)
            assert out.dtype == torch.float16 and out.is_contiguous(memory_format=layout)
            assert torch.equal(out, plain(x, layout).to(torch.float16))


def test_a_ring_is_pinned_only_where_cuda_is():
    from cnncodes.extract.batch_ring import BatchRing
    ring = BatchRing(3, 2, 8, torch.channels_last, torch.uint8)
    assert ring.batch(4).dtype == torch.uint8 and ring.batch(4).is_contiguous(memory_format=torch.channels_last)
    assert ring.pin() == torch.cuda.is_available()
    ring.unpin()


class FakeDecoder:
    """A batched device decoder that refuses any batch holding a file whose bytes contain
    ``refuse`` (as nvJPEG fails a whole call for one file it cannot read), and decodes the rest
    with torchvision on the CPU; it counts its calls and the files it was given."""

    def __init__(self, refuse=b"REFUSE"):
        self.refuse, self.calls, self.files = refuse, 0, 0

    def __call__(self, datas, device):
        import torchvision.io as tvio
        self.calls += 1
        self.files += len(datas)
        if any(self.refuse in bytes(d.numpy()) for d in datas):
            raise RuntimeError("fake device decoder: cannot decode")
        return [tvio.decode_jpeg(d, mode=tvio.ImageReadMode.RGB) for d in datas]


def _refused_but_valid(path):
    """A JPEG that PIL reads but the fake device decoder refuses (a comment holding its marker)."""
    image = Image.open(path)
    image.save(path, quality=90, comment=b"REFUSE")
    return path


def test_the_gpu_decoders_fallback_is_per_image(tmp_path):
    """One batched call; when it fails, one call a file; a file the device refuses goes to the CPU
    (PIL) alone, and one nobody can read is a failure with PIL's reason."""
    paths = _photos(tmp_path, 4)
    _refused_but_valid(paths[1])
    (tmp_path / "trunc.jpg").write_bytes(open(paths[0], "rb").read()[:300] + b"REFUSE")
    paths.append(str(tmp_path / "trunc.jpg"))
    items = [(i, RawJpeg(p, open(p, "rb").read(), 1)) for i, p in enumerate(paths)]
    transform = get_backbone("resnet18").preprocess.with_crop(32).tensor_transform()
    fake = FakeDecoder()
    done, failed = finish_batch(items[:1] + items[2:4], transform, CPU, 10**8, decode=fake)
    assert (fake.calls, sorted(done), failed) == (1, [0, 2, 3], [])
    fake = FakeDecoder()
    done, failed = finish_batch(items, transform, CPU, 10**8, decode=fake)
    assert fake.calls == 1 + len(items) and sorted(done) == [0, 1, 2, 3]
    assert [i for i, _ in failed] == [4] and "cannot decode" in failed[0][1]
    assert all(image.shape == (3, 32, 32) and image.dtype == torch.uint8 for image in done.values())
    expected = transform(torch.from_numpy(np.array(Image.open(paths[1]).convert("RGB"))).permute(2, 0, 1))
    assert torch.equal(done[1], expected)  # the refused file: PIL's pixels, the same resize


def test_the_gpu_decoder_end_to_end_with_a_fake_device_decoder(tmp_path, small_network, monkeypatch):
    """The whole gpu-decoder path on the CPU: workers send JPEG bytes, a PNG decoded in the worker,
    a JPEG the device refuses decoded on the CPU, a broken file recorded; every good image has its
    codes, in record order, equal to the torchvision decoder's where the pixels are the same library's."""
    from dataclasses import replace
    model, preprocess = small_network
    paths = _photos(tmp_path, 6)
    _refused_but_valid(paths[2])
    png = tmp_path / "q.png"
    Image.open(paths[0]).save(png)
    paths.insert(3, str(png))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really REFUSE")
    paths.append(str(tmp_path / "broken.jpg"))
    records = [Record(path=p, abspath=p, label=None) for p in paths]
    fake = FakeDecoder()
    monkeypatch.setattr(tensor_decoding, "device_decode", fake)
    gpu = _codes(model, replace(preprocess, decoder="gpu"), records, workers=2)
    cpu = _codes(model, replace(preprocess, decoder="torchvision"), records, workers=0)
    assert fake.calls >= 1 and fake.files >= 6
    assert gpu["failed"] == cpu["failed"] == [7]
    assert set(gpu) == set(cpu) == {0, 1, 2, 3, 4, 5, 6, "failed"}
    for i in (0, 1, 3, 4, 5, 6):  # the refused JPEG (2) went through PIL: its pixels differ slightly
        for layer, code in cpu[i].items():
            np.testing.assert_array_equal(gpu[i][layer], code)


def test_the_gpu_decoder_is_recorded_and_needs_cuda(tmp_path):
    codes = CodeSpec(backbone="resnet18", weights="random", decoder="gpu")
    on_gpu = Extractor.for_new_codes(codes, compute_device="cuda")
    assert on_gpu.fingerprint.preprocess["decoder"] == "gpu" and on_gpu.precision == "fp16"
    with pytest.raises(ExtractError, match="decoder=gpu decodes JPEGs on a CUDA device"):
        Extractor.for_new_codes(codes, options=RunOptions(device="cpu"))
    with pytest.raises(ExtractError, match="views="):
        CodeSpec(decoder="gpu", views=2)
