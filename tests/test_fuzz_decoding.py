"""Seeded decoder fuzzing: mutated JPEG, PNG, WebP, GIF and TIFF bytes give a row or a recorded
failure, never a crash or a hang."""
import io
import random
import signal
import struct
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from cnncodes.extract.backbones import get_backbone
from cnncodes.extract.dataset import ImageRecords

CASES_PER_FORMAT = 400
SECONDS_PER_CASE = 10
FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF", "tif": "TIFF"}
PRE = get_backbone("vgg16").preprocess.with_crop(32)


@dataclass
class FuzzRecord:
    abspath: str
    known: object = None


def seed_image(fmt, rng):
    arr = rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def mutate(data: bytes, rng: random.Random, fmt: str) -> bytes:
    data = bytearray(data)
    kind = rng.choice(["truncate", "flip", "header", "huge", "splice"])
    if kind == "truncate":
        return bytes(data[:rng.randrange(0, len(data))])
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == "header":
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(min(64, len(data)))
            data[i] = rng.randrange(256)
    elif kind == "huge":  # claim enormous dimensions in the header
        if fmt == "PNG":
            data[16:24] = struct.pack(">II", 100_000, 100_000)
        elif fmt == "GIF":
            data[6:10] = struct.pack("<HH", 65535, 65535)
        else:
            i = rng.randrange(2, min(40, len(data) - 4))
            data[i:i + 4] = b"\xff\xff\xff\x7f"
    else:  # splice: a block repeated somewhere else
        a, b = sorted(rng.randrange(len(data)) for _ in range(2))
        i = rng.randrange(len(data))
        data[i:i] = data[a:b][:4096]
    return bytes(data)


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


@pytest.mark.parametrize("decoder", ["pil", "torchvision"])
def test_mutated_images_give_a_row_or_a_failure(tmp_path, decoder):
    from dataclasses import replace
    loader = replace(PRE, decoder=decoder).loader(max_pixels=100_000_000)
    rng, np_rng = random.Random(1129), np.random.default_rng(1129)
    records, cases = [], 0
    for ext, fmt in FORMATS.items():
        original = seed_image(fmt, np_rng)
        for i in range(CASES_PER_FORMAT):
            path = tmp_path / f"{ext}-{i:03d}.{ext}"
            path.write_bytes(mutate(original, rng, fmt))
            records.append(FuzzRecord(str(path)))
    dataset = ImageRecords(records, loader)
    previous = signal.signal(signal.SIGALRM, _alarm)
    outcomes = {"row": 0, "failure": 0}
    started = time.perf_counter()
    try:
        for i in range(len(dataset)):
            signal.alarm(SECONDS_PER_CASE)
            try:
                item = dataset[i]
            except Timeout:
                pytest.fail(f"{records[i].abspath}: decoding hung for {SECONDS_PER_CASE} s")
            finally:
                signal.alarm(0)
            cases += 1
            assert len(item.key) == 64 and item.index == i and not item.unchanged
            if item.failure is None:
                image = item.image
                assert isinstance(image, torch.Tensor) and image.shape == (3, 32, 32) and image.dtype == torch.uint8
                outcomes["row"] += 1
            else:
                assert item.image is None and isinstance(item.failure, str) and item.failure
                outcomes["failure"] += 1
    finally:
        signal.signal(signal.SIGALRM, previous)
    print(f"{decoder}: {cases} fuzz cases in {time.perf_counter() - started:.1f} s: {outcomes}")
    assert cases == CASES_PER_FORMAT * len(FORMATS)
    assert outcomes["row"] > 0 and outcomes["failure"] > 0  # the mutations really exercise both paths
