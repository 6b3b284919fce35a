"""The demo: the whole flow offline on the 200 flower photos shipped in the package, or on a small
labelled set drawn on the fly (``synthetic``).

The drawn set has five flower-like classes that differ in petal count, petal shape and colour,
drawn with random pose, scale, position, background, colour jitter, blur and noise: learnable, but
not trivial.
"""
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .compare import compare
from .extract import extract_codes

CLASSES = {
    #  name        petals  petal length/width  hue (RGB)
    "daisyish":   (12, (0.95, 0.22), (235, 235, 225)),
    "buttercup":  (5, (0.70, 0.55), (240, 200, 40)),
    "starflower": (6, (1.00, 0.15), (200, 60, 160)),
    "poppyish":   (4, (0.75, 0.75), (220, 50, 40)),
    "bluebell":   (8, (0.85, 0.35), (70, 90, 220)),
}


def _jitter(rgb, rng, amount=40):
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def draw_flower(cls: str, rng: np.random.Generator, size=160) -> Image.Image:
    petals, (length, width), colour = CLASSES[cls]
    petals += int(rng.integers(-1, 2)) if petals > 6 else 0
    bg = tuple(int(v) for v in rng.integers(20, 140, 3))
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):  # clutter: leaves and stems in the background
        x, y = rng.integers(0, size, 2)
        r = int(rng.integers(5, 25))
        draw.ellipse([x - r, y - r // 2, x + r, y + r // 2], fill=_jitter((60, 130, 50), rng, 35))
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    radius = rng.uniform(0.12, 0.38) * size
    angle0 = rng.uniform(0, 2 * math.pi)
    # Colour is a hint, not the answer: a third of the flowers take any colour at all.
    petal_colour = tuple(int(v) for v in rng.integers(30, 256, 3)) if rng.random() < 0.33 else _jitter(colour, rng, 70)
    for k in range(petals):
        a = angle0 + 2 * math.pi * k / petals
        px, py = cx + math.cos(a) * radius * length * 0.55, cy + math.sin(a) * radius * length * 0.55
        pl, pw = radius * length * 0.55, radius * width * 0.5
        corners = [(px + math.cos(a) * dx - math.sin(a) * dy, py + math.sin(a) * dx + math.cos(a) * dy)
                   for dx, dy in [(-pl, 0), (0, -pw), (pl, 0), (0, pw)]]
        draw.polygon(corners, fill=_jitter(petal_colour, rng, 15))
    c = radius * rng.uniform(0.18, 0.28)
    draw.ellipse([cx - c, cy - c, cx + c, cy + c], fill=_jitter((230, 180, 40), rng, 30))
    for _ in range(int(rng.integers(0, 3))):  # foreground leaves that hide part of the flower
        x, y = rng.integers(0, size, 2)
        r = int(rng.integers(8, 30))
        draw.ellipse([x - r, y - r // 2, x + r, y + r // 2], fill=_jitter((60, 130, 50), rng, 35))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 2.0)))
    noise = rng.normal(0, rng.uniform(2, 25), (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))


def make_synthetic_flowers(root, per_class=40, seed=0, size=160) -> str:
    """Write root/<class>/<i>.jpg; returns root. Re-running with the same arguments writes the same files."""
    rng = np.random.default_rng(seed)
    for cls in CLASSES:
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        for i in range(per_class):
            path = os.path.join(root, cls, f"{cls}_{i:03d}.jpg")
            img = draw_flower(cls, rng, size)
            if not os.path.exists(path):
                img.save(path, quality=90)
    return root


# shipped inside the package, beside this layer: cnncodes/demo_data
DEMO_PHOTOS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo_data", "flowers")


def demo(out="demo_out", *, data=None, backbone="efficientnet_lite0", classifiers=None, synthetic=False,
         per_class=60, progress=False, on_extracted=None, on_result=None):
    """The whole flow offline: extract ``data`` (default: the 200 flower photos shipped in the
    package; ``synthetic``: drawn images) into OUT/codes.h5, compare every classifier and write
    OUT/report. Returns (the photos' folder, the ExtractSummary, the Comparison)."""
    out = os.fspath(out)
    if data is None and synthetic:
        data = make_synthetic_flowers(os.path.join(out, "images"), per_class=per_class)
    data = DEMO_PHOTOS if data is None else os.fspath(data)
    cache = os.path.join(out, "codes.h5")
    summary = extract_codes(data, cache, backbone=backbone, progress=progress)
    if on_extracted is not None:
        on_extracted(summary)
    table = compare(cache, classifiers, on_result=on_result)
    table.write_report(os.path.join(out, "report"))
    return data, summary, table
