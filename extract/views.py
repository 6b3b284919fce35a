"""Augmented training views (`extract --views K`): K extra rows per *train* image, cached.

The classic exercise trains on a fresh random crop of each photo every epoch; a cache of centre
views loses that augmentation. Here each train image also gets K views, computed from the same
decode in the same pass, each seeded by the image's content key and the view index, so a view
is the same on every machine and in every resumed run.

A view: the image resized as for the centre view (shorter side ``resize``), then a random
resized crop of ``scale`` of that area at an aspect ratio in ``ratio``, to ``crop`` pixels;
odd views are mirrored (so half of them are). The crop range is not tuned: on flowers5 gentler
crops (0.8-1) measured no better, and no K measured better than no views (docs/benchmarks.md).
"""
from dataclasses import asdict, dataclass

import numpy as np

from .sources import DEFAULT_SPLIT_FRACTIONS, split_of

DEFAULT_SCALE = (0.5, 1.0)
DEFAULT_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class ViewRecipe:
    count: int
    scale: tuple = DEFAULT_SCALE
    ratio: tuple = DEFAULT_RATIO
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "ViewRecipe":
        return cls(int(d["count"]), tuple(d["scale"]), tuple(d["ratio"]), int(d.get("seed", 0)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scale"], d["ratio"] = list(self.scale), list(self.ratio)
        return d

    def view_seed(self, key: str, view: int) -> int:
        """The torch seed of one view of the image whose content key (SHA-256 hex) is ``key``."""
        words = [int(key[i:i + 8], 16) for i in range(0, min(len(key), 32), 8)] if key else [0]
        return int(np.random.SeedSequence(words + [view, self.seed]).generate_state(1, np.uint64)[0])


class ViewPlan:
    """Which records get views (train rows only) and how to draw them; picklable for workers."""

    def __init__(self, recipe: ViewRecipe, preprocess, split_seed=0, split_fractions=DEFAULT_SPLIT_FRACTIONS):
        self.recipe = recipe
        self.split_seed, self.split_fractions = split_seed, tuple(split_fractions)
        self.preprocess = preprocess

    def count(self, record, key: str) -> int:
        train = split_of(record, key, self.split_seed, self.split_fractions) == "train"
        return self.recipe.count if train else 0

    def views(self, resized, key: str, count: int) -> list:
        """``count`` uint8 tensors [3, crop, crop] from ``resized`` (the resized PIL image)."""
        import torch
        from torchvision.transforms import InterpolationMode, v2
        crop = v2.RandomResizedCrop(self.preprocess.crop, scale=self.recipe.scale, ratio=self.recipe.ratio,
                                    interpolation=InterpolationMode(self.preprocess.interpolation), antialias=True)
        out = []
        for view in range(1, count + 1):
            with torch.random.fork_rng(devices=[]):   # the caller's random state is left as it was
                torch.manual_seed(self.recipe.view_seed(key, view))
                image = crop(resized)
            if view % 2:
                image = v2.functional.horizontal_flip(image)
            out.append(v2.functional.pil_to_tensor(image))
        return out

    def stack(self, image, key: str, count: int):
        """From one decoded PIL image: the centre view and ``count`` views, uint8 [1 + count, 3, crop, crop]."""
        import torch
        from torchvision.transforms import v2
        resized = self.preprocess.resizer()(image)
        centre = v2.functional.pil_to_tensor(v2.CenterCrop(self.preprocess.crop)(resized))
        return torch.stack([centre] + self.views(resized, key, count))
