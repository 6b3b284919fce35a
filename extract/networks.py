"""The code-producing networks: a backbone cut at the layers asked for, returning {layer: [B, D]}."""
import torch
from torch import nn


class VGGCodes(nn.Module):
    """VGG16 up to the requested layers: pool5 (global average of the last conv block, 512-d),
    fc6 and fc7 (4096-d, after ReLU; fc7 equals ``vgg.classifier[:5]`` in eval mode)."""

    def __init__(self, vgg: nn.Module, layers: tuple):
        super().__init__()
        self.layers = layers
        self.features = vgg.features
        self.avgpool = vgg.avgpool
        needs_fc = bool({"fc6", "fc7"} & set(layers))
        self.fc6 = vgg.classifier[:2] if needs_fc else None     # Linear, ReLU
        self.fc7 = vgg.classifier[2:5] if "fc7" in layers else None  # Dropout, Linear, ReLU

    def forward(self, x):
        out = {}
        feats = self.features(x)
        if "pool5" in self.layers:
            out["pool5"] = feats.mean(dim=(2, 3))
        if self.fc6 is not None:
            h6 = self.fc6(torch.flatten(self.avgpool(feats), 1))
            if "fc6" in self.layers:
                out["fc6"] = h6
            if self.fc7 is not None:
                out["fc7"] = self.fc7(h6)
        return out


class EfficientNetCodes(nn.Module):
    """Global average of EfficientNet's final feature map ("avgpool", 1280-d for Lite0) and of
    intermediate stages' outputs ("stageN": the last block of stage N, by forward hooks)."""

    def __init__(self, net: nn.Module, layers: tuple, stage_blocks: dict):
        super().__init__()
        self.layers = layers
        self.net = net
        self._pooled = {}
        for name in layers:
            if name in stage_blocks:
                net._blocks[stage_blocks[name]].register_forward_hook(self._keeper(name))

    def _keeper(self, name):
        def keep(module, inputs, output):
            self._pooled[name] = output.mean(dim=(2, 3))
        return keep

    def forward(self, x):
        final = self.net.extract_features(x)
        pooled, self._pooled = self._pooled, {}
        return {name: final.mean(dim=(2, 3)) if name == "avgpool" else pooled[name] for name in self.layers}
