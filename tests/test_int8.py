"""int8 extraction on the CPU: codes close to fp32, calibration recorded once and reused."""
import hashlib

import numpy as np
import pytest
import torch

from conftest import FAST_VGG, make_folder, run_cli
from cnncodes.cache import FingerprintMismatch, open_cache
from cnncodes.extract import ExtractConfig, run_extract
from cnncodes.extract.device import pick_precision
from cnncodes.extract.errors import ExtractError
from cnncodes.extract.by_fingerprint import encode_images


def _extract(folder, cache, precision, **overrides):
    settings = dict(weights="random", crop_size=32, workers=0, batch_size=4, progress=False, precision=precision)
    return run_extract(ExtractConfig(str(folder), str(cache), **{**settings, **overrides}))


def _codes_by_path(cache):
    with open_cache(cache) as c:
        return dict(zip(c.paths, c.codes("fc7"))), c.fingerprint


def _cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("engine", ["onednn", "x86"])
def test_int8_codes_track_fp32_and_record_their_calibration(image_folder, tmp_path, engine):
    _extract(image_folder, tmp_path / "fp32.h5", "fp32")
    summary = _extract(image_folder, tmp_path / "int8.h5", "int8", calibration_images=8, int8_engine=engine)
    assert summary.written == 18
    fp32, _ = _codes_by_path(tmp_path / "fp32.h5")
    int8, fingerprint = _codes_by_path(tmp_path / "int8.h5")
    assert sorted(fp32) == sorted(int8)
    cosines = [_cosine(fp32[p], int8[p]) for p in fp32]
    assert min(cosines) > 0.99, cosines
    assert any(not np.array_equal(fp32[p], int8[p]) for p in fp32)  # it really ran in int8
    quantization = fingerprint.quantization
    assert fingerprint.precision == "int8" and quantization["engine"] == engine
    with open_cache(tmp_path / "int8.h5") as c:  # the sample: 8 paths chosen by a hash of the path
        by_path = dict(zip(c.paths, c.keys))
    chosen = sorted(by_path, key=lambda p: hashlib.sha256(p.encode()).hexdigest())[:8]
    keys = sorted(by_path[p] for p in chosen)
    assert quantization["calibration"] == {"images": 8,
                                           "keys_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest()}
    assert all(scale > 0 and 0 <= zero_point <= 255 for scale, zero_point in quantization["activations"].values())


def test_int8_resume_reuses_the_calibration_and_predict_rebuilds_it(tmp_path):
    folder = tmp_path / "images"
    make_folder(str(folder), per_class=4)
    cache = tmp_path / "int8.h5"
    _extract(folder, cache, "int8", calibration_images=6)
    _, first = _codes_by_path(cache)
    new_paths = make_folder(str(folder), per_class=3, start=4)
    summary = _extract(folder, cache, "int8", calibration_images=6)
    assert (summary.written, summary.skipped) == (9, 12)
    codes, second = _codes_by_path(cache)
    assert second.quantization == first.quantization  # not recalibrated on the new images

    # predict's path: the same int8 network from the fingerprint, other batching, same codes.
    paths, rebuilt, failures = encode_images(second, new_paths, batch_size=5, workers=0)
    assert failures == [] and len(paths) == 9
    for path, row in zip(paths, rebuilt):
        stored = next(v for p, v in codes.items() if path.endswith(p))  # the cache keeps relative paths
        np.testing.assert_allclose(row, stored, rtol=0, atol=1e-6)


def test_int8_and_float_codes_never_share_a_cache(image_folder, tmp_path):
    _extract(image_folder, tmp_path / "fp32.h5", "fp32")
    with pytest.raises(ExtractError, match="int8 codes cannot join"):
        _extract(image_folder, tmp_path / "fp32.h5", "int8")
    _extract(image_folder, tmp_path / "int8.h5", "int8", calibration_images=4)
    with pytest.raises(FingerprintMismatch, match="quantization: cache has int8 calibrated on 4 images, x86"):
        _extract(image_folder, tmp_path / "int8.h5", "fp32")


def test_int8_is_refused_where_it_does_not_apply(image_folder, tmp_path):
    with pytest.raises(ExtractError, match="CPU only"):
        pick_precision("int8", torch.device("cuda"))
    with pytest.raises(ExtractError, match="not offered for efficientnet_lite0"):
        _extract(image_folder, tmp_path / "e.h5", "int8", backbone="efficientnet_lite0")
    with pytest.raises(ExtractError, match="int8_engine=qnnpack"):
        _extract(image_folder, tmp_path / "q.h5", "int8", int8_engine="qnnpack")
    out = run_cli("extract", image_folder, "--cache", tmp_path / "c.h5", *FAST_VGG, "--precision", "int8",
                  "--calibration-images", "0", check=False)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "--calibration-images 0" in out.stderr


def test_auto_precision_follows_the_cpus_bf16_hardware(monkeypatch):
    from cnncodes.extract import device as device_module
    cpu = torch.device("cpu")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)  # the suite may run with an AVX2 cap
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert pick_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert pick_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert device_module.native_bf16() and pick_precision("auto", cpu) == "bf16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # oneDNN capped below bf16: emulated, so fp32
    assert not device_module.native_bf16() and pick_precision("auto", cpu) == "fp32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert pick_precision("auto", cpu) == "bf16"
    assert pick_precision("fp32", cpu) == "fp32"  # asked for explicitly: kept
    assert pick_precision("auto", torch.device("cuda")) == "fp16"


def test_auto_precision_is_recorded_in_the_fingerprint(image_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    _extract(image_folder, tmp_path / "c.h5", "auto")
    with open_cache(tmp_path / "c.h5") as c:
        assert c.fingerprint.precision == "bf16"
