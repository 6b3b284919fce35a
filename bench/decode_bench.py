#!/usr/bin/env python
"""Decoding cost per image on one core: the part of extraction that must hide behind the model.

Times what one DataLoader worker does per image (open, decode, EXIF, resize, centre crop, to
uint8 tensor) for the photos as they are, and for the same photos re-saved as big JPEGs
(default 2048 px on the longer side, as phone and camera photos arrive), with a full decode
and with --jpeg-draft, and with the torchvision decoder (libjpeg-turbo + tensor resize). All in
one run, same images.

    python bench/decode_bench.py ../shared/data/flowers5 --limit 200
"""
import argparse
import os
import shutil
import tempfile
import time
from dataclasses import replace

from PIL import Image

from cnncodes.extract import get_backbone  # noqa: E402
from cnncodes.extract.dataset import ImageRecords  # noqa: E402
from cnncodes.extract.decoding import DEFAULT_MAX_PIXELS  # noqa: E402
from cnncodes.extract.sources import Record  # noqa: E402
from _common import subset_folder  # noqa: E402


def per_image_ms(records, preprocess, repeats=2):
    dataset = ImageRecords(records, preprocess.loader(DEFAULT_MAX_PIXELS))
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(len(dataset)):
            item = dataset[i]  # the worker reads, hashes and decodes
            assert item.image is not None, item.failure
        best = min(best, time.perf_counter() - started)
    return 1000 * best / len(dataset)


def enlarge(records, longer_side, dst):
    """The same photos re-saved as 4:3 JPEGs of the given longer side (quality 90)."""
    out = []
    for i, r in enumerate(records):
        img = Image.open(r.abspath).convert("RGB")
        big = img.resize((longer_side, longer_side * 3 // 4), Image.BICUBIC)
        path = os.path.join(dst, f"{i:05d}.jpg")
        big.save(path, quality=90)
        out.append(Record(path=os.path.basename(path), abspath=path, label=r.label))
    return out, big.size


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--backbone", default="vgg16")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--longer-side", type=int, default=2048)
    args = ap.parse_args()
    preprocess = get_backbone(args.backbone).preprocess
    draft = replace(preprocess, jpeg_draft=True)
    tensor = replace(preprocess, decoder="torchvision")
    tmp = tempfile.mkdtemp(prefix="cnncodes-decode-")
    try:
        picked = subset_folder(args.data, args.limit, os.path.join(tmp, "data"))
        native_size = Image.open(picked[0].abspath).size
        big, big_size = enlarge(picked, args.longer_side, tmp)
        small, large = f"{native_size[0]}x{native_size[1]}", f"{big_size[0]}x{big_size[1]}"
        rows = [
            (f"{small} as they are, pil", per_image_ms(picked, preprocess)),
            (f"{small} as they are, torchvision", per_image_ms(picked, tensor)),
            (f"{large} JPEG, pil full decode", per_image_ms(big, preprocess)),
            (f"{large} JPEG, pil --jpeg-draft", per_image_ms(big, draft)),
            (f"{large} JPEG, torchvision", per_image_ms(big, tensor)),
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(picked)} images, one process, resize {preprocess.resize} crop {preprocess.crop}")
    print(f"{'photos':<42}{'ms/image':>10}{'images/s/core':>15}")
    for name, ms in rows:
        print(f"{name:<42}{ms:>10.2f}{1000 / ms:>15.1f}")
    print(f"--jpeg-draft on big photos: {rows[2][1] / rows[3][1]:.2f}x faster than a full PIL decode")


if __name__ == "__main__":
    main()
