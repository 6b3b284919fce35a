"""open_clip image towers: `open_clip:ARCH/TAG` (e.g. open_clip:ViT-B-32/openai), the optional
extra `pip install -e '.[zoo]'`.

Built by `open_clip.create_model` from the architecture's config, weights found by the tag's
own download (Hugging Face or URL cache), preprocessing from the tag's config (a bare --weights
FILE keeps it: the tag names the config). Codes: "pre_projection", the tower's pooled feature
before the projection (what CLIP's own linear probes read), default where the tower has a
projection matrix; "embedding", `encode_image`'s projected output.
"""
import os

from torch import nn

from ..errors import ExtractError, WeightsUnavailable
from .base import BackboneSpec, did_you_mean, first_line, in_hf_cache, matching, require
from .timm import file_weights

PRE_PROJECTION, EMBEDDING = "pre_projection", "embedding"
INSTALL = "open_clip backbones need `pip install open_clip_torch` (or the project's extra: pip install -e '.[zoo]')"


def _open_clip():
    return require("open_clip", INSTALL)


def names(pattern=None) -> list:
    return matching([f"open_clip:{arch}/{tag}" for arch, tag in _open_clip().list_pretrained()], pattern)


class OpenClipBackbone(BackboneSpec):
    family = "open_clip"
    library = "open_clip_torch"

    def __init__(self, name: str):
        self.arch, _, self.tag = name[len("open_clip:"):].partition("/")
        super().__init__(name, layers=(PRE_PROJECTION, EMBEDDING), description=f"open_clip {self.arch} {self.tag}")

    @property
    def pretrained_cfg(self) -> dict:
        open_clip = _open_clip()
        if self.arch not in open_clip.list_models():
            raise ExtractError(f"backbone={self.name}: unknown open_clip architecture"
                               f"{did_you_mean(self.arch, open_clip.list_models())}; "
                               "`cnncodes backbones 'open_clip:*'` lists them")
        cfg = open_clip.get_pretrained_cfg(self.arch, self.tag)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(self.arch)
            raise ExtractError(f"backbone={self.name}: {self.arch} has pretrained tags {', '.join(tags) or 'none'} "
                               f"(name one as open_clip:{self.arch}/TAG)")
        return cfg

    def make_preprocess(self):
        from dataclasses import asdict
        from open_clip.transform import PreprocessCfg, merge_preprocess_dict
        from ..preprocessing import Preprocess
        open_clip = _open_clip()
        config = merge_preprocess_dict(asdict(PreprocessCfg()), self.pretrained_cfg)  # as create_model merges
        size = open_clip.get_model_config(self.arch)["vision_cfg"].get("image_size", config["size"])
        size = size if isinstance(size, int) else size[-1]
        if config["resize_mode"] not in ("shortest", "squash"):
            raise ExtractError(f"{self.name}: open_clip resize mode {config['resize_mode']!r} is not supported "
                               "(shortest side or squash, then the centre crop)")
        return Preprocess(resize=size, crop=size, mean=tuple(config["mean"]), std=tuple(config["std"]),
                          interpolation=config["interpolation"], squash=config["resize_mode"] == "squash")

    def pretrained_weights(self):
        from open_clip.pretrained import download_pretrained
        from ..weights import ResolvedWeights, file_sha256
        cfg = self.pretrained_cfg
        try:
            path = download_pretrained(cfg)
        except Exception as exc:
            raise WeightsUnavailable(
                f"cannot load {self.name} weights ({first_line(exc)}). Connect once to the internet so open_clip "
                f"downloads them ({cfg.get('hf_hub') or cfg.get('url')}); or pass weights=FILE; or weights=random") from None
        return ResolvedWeights(identity=f"open_clip:{self.arch}/{self.tag} sha256:{file_sha256(path)}", path=path)

    def weights_file(self, path):
        return file_weights(path)

    def weights_here(self) -> bool:
        """The tag's "org/repo/" or "org/repo/file" in the Hugging Face cache (open_clip's naming)."""
        hub = (self.pretrained_cfg.get("hf_hub") or "").rstrip("/")
        if not hub:
            return False
        repo, files = ((os.path.dirname(hub), [os.path.basename(hub)]) if hub.count("/") > 1 else
                       (hub, ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]))
        return in_hf_cache(repo, files) is not None

    def network(self, weights, input_size=None):
        open_clip = _open_clip()
        model = open_clip.create_model(self.arch, pretrained=weights.path, device="cpu",
                                       force_image_size=input_size if input_size != self.preprocess.crop else None)
        return model.visual

    def cut(self, network, layers, shapes=None):
        return TowerCut(network, layers)

    def encode_text(self, weights, texts) -> "np.ndarray":
        """The same model's text tower: each text's embedding (what the image tower's ``embedding``
        layer is compared with), float32 [len(texts), D]."""
        import numpy as np
        import torch
        open_clip = _open_clip()
        model = open_clip.create_model(self.arch, pretrained=weights.path, device="cpu").eval()
        with torch.no_grad():
            return model.encode_text(open_clip.get_tokenizer(self.arch)(list(texts))).float().numpy().astype(np.float32)

    @property
    def defaults(self) -> tuple:
        """pre_projection where the tower is open_clip's ViT (a projection matrix), else embedding."""
        vision = _open_clip().get_model_config(self.arch)["vision_cfg"]
        projected = not isinstance(vision.get("layers"), (list, tuple)) and not vision.get("timm_model_name")
        return (PRE_PROJECTION,) if projected else (EMBEDDING,)


class TowerCut(nn.Module):
    """The tower with its projection taken out: pre_projection is the tower's output without it,
    embedding that times the projection (encode_image exactly)."""

    def __init__(self, visual, layers):
        super().__init__()
        self.layers = tuple(layers)
        self.proj = getattr(visual, "proj", None)
        if PRE_PROJECTION in self.layers and not isinstance(self.proj, nn.Parameter):
            raise ExtractError(f"layer={PRE_PROJECTION}: this open_clip tower ({type(visual).__name__}) has no "
                               f"projection matrix to stop before; use layer={EMBEDDING}")
        if self.proj is not None:
            visual.proj = None
        self.visual = visual

    def forward(self, x):
        pooled = self.visual(x)
        out = {PRE_PROJECTION: pooled}
        if EMBEDDING in self.layers:
            out[EMBEDDING] = pooled @ self.proj if self.proj is not None else pooled
        return {layer: out[layer] for layer in self.layers}
