"""timm models: `timm:NAME` or `timm:NAME.TAG` (e.g. timm:convnext_tiny.fb_in22k,
timm:vit_small_patch14_dinov2.lvd142m), the optional extra `pip install -e '.[zoo]'`.

Built the library's way (`create_model(..., num_classes=0)`), weights from the Hugging Face
cache, preprocessing from `resolve_model_data_config`. Codes: "pre_logits" (the pooled features
the classifier reads) by default, and "blockN", the N-th of `forward_intermediates`' outputs
(a stage of a convnet, a block of a ViT), averaged over its map. `--crop-size` sets the input
size (`img_size`, for models that fix one: DINOv2's default 518 costs ~5x the compute of 224).
"""
import os

from torch import nn

from ..errors import ExtractError, WeightsUnavailable
from .base import (BackboneSpec, did_you_mean, first_line, in_hf_cache, matching, on_meta_else_cpu,
                   random_network, require)

PRE_LOGITS = "pre_logits"
INSTALL = "timm backbones need `pip install timm` (or the project's extra: pip install -e '.[zoo]')"


def _timm():
    return require("timm", INSTALL)


def names(pattern=None) -> list:
    """`timm:NAME.TAG` for every pretrained tag timm knows (no network), matched whole by ``pattern``."""
    return matching(["timm:" + n for n in _timm().list_models(pretrained=True)], pattern)


class TimmBackbone(BackboneSpec):
    family = "timm"
    library = "timm"

    def __init__(self, name: str):
        super().__init__(name, layers=(PRE_LOGITS,), description=f"timm {name[5:]}")
        self.model = name[len("timm:"):]

    @property
    def pretrained_cfg(self):
        timm = _timm()
        if not timm.is_model(self.model.partition(".")[0]):
            raise ExtractError(f"backbone={self.name}: unknown timm model"
                               f"{did_you_mean(self.model, timm.list_models(pretrained=True))}; "
                               "`cnncodes backbones 'timm:*PATTERN*'` lists them")
        from timm.models import get_pretrained_cfg
        cfg = get_pretrained_cfg(self.model)
        if cfg is None:
            raise ExtractError(f"backbone={self.name}: timm has no pretrained tag {self.model!r}; "
                               f"tags: {', '.join(timm.list_pretrained(self.model.partition('.')[0] + '.*'))}")
        return cfg

    def make_preprocess(self):
        from timm.data import resolve_data_config
        from ..preprocessing import Preprocess
        config = resolve_data_config(pretrained_cfg=self.pretrained_cfg.to_dict())
        mode = config.get("crop_mode") or "center"
        if mode not in ("center", "squash"):
            raise ExtractError(f"{self.name}: timm crop mode {mode!r} is not supported (center or squash)")
        crop = int(config["input_size"][-1])
        # timm's eval transform: the shorter side (squash: both sides) to floor(crop / crop_pct), then the centre crop.
        return Preprocess(resize=int(crop / config["crop_pct"]), crop=crop, mean=tuple(config["mean"]),
                          std=tuple(config["std"]), interpolation=config["interpolation"], squash=mode == "squash")

    def pretrained_weights(self):
        from ..weights import ResolvedWeights, file_sha256
        cfg = self.pretrained_cfg
        try:
            path = _cached_file(cfg)
        except Exception as exc:
            raise WeightsUnavailable(
                f"cannot load {self.name} weights ({first_line(exc)}). Connect once to the internet so timm downloads "
                f"them into the Hugging Face cache ({cfg.hf_hub_id or cfg.url}); or pass weights=FILE; "
                "or weights=random (tests and timing only)") from None
        return ResolvedWeights(identity=f"timm:{self.model} sha256:{file_sha256(path)}", path=path)

    def weights_file(self, path):
        return file_weights(path)

    def weights_here(self) -> bool:
        return _in_hf_cache(self.pretrained_cfg) is not None

    def network(self, weights, input_size=None):
        timm = _timm()
        kwargs = {"num_classes": 0}
        if weights.path:  # the file timm loads itself, with the tag's config (filters, head removal)
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": weights.path})
        if input_size and input_size != self.preprocess.crop:
            kwargs["img_size"] = input_size
        try:
            return timm.create_model(self.model, **kwargs)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
            del kwargs["img_size"]  # a convnet: any input size runs
            return timm.create_model(self.model, **kwargs)

    def cut(self, network, layers, shapes=None):
        return TimmCut(network, layers)

    def other_layers(self) -> list:
        blocks = on_meta_else_cpu(lambda: len(getattr(random_network(self), "feature_info", None) or []))
        return [f"block{i}" for i in range(blocks)]

    def more_layers_hint(self) -> str:
        return ", or blockN (the N-th output of timm's forward_intermediates, from 0)"


def file_weights(path):
    """--weights FILE for a library that loads the file itself (its own formats, safetensors too)."""
    from ..weights import ResolvedWeights, file_sha256
    if not os.path.isfile(path):
        raise WeightsUnavailable(f"{path}: no such weights file; pass an existing weights file to weights=")
    return ResolvedWeights(identity=f"file:{os.path.basename(path)} sha256:{file_sha256(path)}", path=path)


def _hf_filenames(cfg) -> list:
    """The names timm looks for in a config's Hugging Face repository, in its order."""
    return [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]


def _in_hf_cache(cfg):
    """The weights file of a pretrained config already on this machine, or None (no network)."""
    if cfg.file:
        return cfg.file
    return in_hf_cache(cfg.hf_hub_id, _hf_filenames(cfg)) if cfg.hf_hub_id else None


def _cached_file(cfg) -> str:
    """The weights file of a pretrained config, from the Hugging Face cache (downloaded once)."""
    cached = _in_hf_cache(cfg)
    if cached:
        return cached
    if cfg.hf_hub_id:
        from huggingface_hub import hf_hub_download
        error = None
        for filename in _hf_filenames(cfg):
            try:
                return hf_hub_download(cfg.hf_hub_id, filename)
            except Exception as exc:  # the next name, or the first error
                error = error or exc
        raise error
    from timm.models._hub import download_cached_file
    return download_cached_file(cfg.url)


class TimmCut(nn.Module):
    """pre_logits from the model's own forward (num_classes=0), blockN from forward_intermediates."""

    def __init__(self, network, layers):
        super().__init__()
        self.network, self.layers = network, tuple(layers)
        self.blocks = [int(layer[5:]) for layer in self.layers if layer.startswith("block")]

    def forward(self, x):
        from .cut import pool
        if not self.blocks:
            return {PRE_LOGITS: self.network(x)}
        final, maps = self.network.forward_intermediates(x, indices=self.blocks)
        out = {f"block{i}": pool(m) for i, m in zip(self.blocks, maps)}
        if PRE_LOGITS in self.layers:
            out[PRE_LOGITS] = self.network.forward_head(final, pre_logits=True)
        return {layer: out[layer] for layer in self.layers}
