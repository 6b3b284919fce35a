"""torchvision's classification models: every name `torchvision.models.list_models` returns.

`resnet50` takes the model's DEFAULT weights, `resnet50.IMAGENET1K_V1` names others. The
preprocessing comes from the weights' own `transforms()`, the weights from torchvision's hub
cache (downloaded once, hash-checked). Codes: the input of the final classifier ("pre_logits",
found in the traced graph) by default, or any graph node by name (`create_feature_extractor`
node names such as `layer3`); VGG keeps its classic names fc7, fc6 and pool5.
"""
import functools
import os

from ..errors import ExtractError, WeightsUnavailable
from .base import BackboneSpec, did_you_mean, first_line, matching, on_meta_else_cpu, random_network

PRE_LOGITS = "pre_logits"
# VGG's classic codes as graph nodes: fc7 and fc6 after their ReLU, pool5 the last conv block's
# output (global-average-pooled by the cut); pool5_map the same output kept whole (512 x 7 x 7 at
# 224), on which stage two trains VGG's own classifier block.
VGG_LAYERS = {"fc7": "classifier.4", "fc6": "classifier.1", "pool5": "features"}
VGG_MAPS = {"pool5_map": "features"}


def names(pattern=None) -> list:
    import torchvision
    return matching(torchvision.models.list_models(module=torchvision.models), pattern)


class TorchvisionBackbone(BackboneSpec):
    family = "torchvision"
    library = "torchvision"

    def __init__(self, name: str):
        model, _, tag = name.partition(".")
        vgg = model.startswith("vgg")
        super().__init__(name, layers=tuple(VGG_LAYERS) if vgg else (PRE_LOGITS,), maps=tuple(VGG_MAPS) if vgg else (),
                         description=f"torchvision {model.upper()} (ImageNet); fc7 after ReLU by default" if vgg
                         else f"torchvision {name}")
        self.model, self.tag = model, tag
        self.int8 = model == "vgg16"  # a plain conv/linear stack: int8 beats fp32 on AVX2 (docs/benchmarks.md)
        self._pre_logits_node = None  # found once per spec: it depends on the architecture only

    # --- the weights enum ----------------------------------------------------------------------
    @functools.cached_property
    def weights_enum(self):
        from torchvision.models import get_model_weights
        try:
            enum = get_model_weights(self.model)
        except (ValueError, KeyError):
            raise ExtractError(f"backbone={self.name}: unknown torchvision model{did_you_mean(self.model, names())}; "
                               "`cnncodes backbones` lists them") from None
        if not self.tag:
            return enum.DEFAULT
        try:
            chosen = enum[self.tag]
        except KeyError:
            raise ExtractError(f"backbone={self.name}: {self.model} has weights "
                               f"{', '.join(w.name for w in enum)}") from None
        if not chosen.meta.get("categories"):
            raise ExtractError(f"backbone={self.name}: {chosen} has no classifier (feature weights); "
                               f"choose {', '.join(w.name for w in enum if w.meta.get('categories'))}")
        return chosen

    def make_preprocess(self):
        from ..preprocessing import Preprocess
        t = self.weights_enum.transforms()
        return Preprocess(resize=int(t.resize_size[0]), crop=int(t.crop_size[0]), mean=tuple(t.mean), std=tuple(t.std),
                          interpolation=t.interpolation.value)

    @property
    def hub_path(self) -> str:
        """Where torch's hub keeps the pretrained weights (load_state_dict_from_url's file name)."""
        import torch
        return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(self.weights_enum.url))

    def weights_here(self) -> bool:
        return os.path.isfile(self.hub_path)

    def pretrained_weights(self):
        from ..weights import ResolvedWeights, file_sha256
        weights, path = self.weights_enum, self.hub_path
        try:
            state = weights.get_state_dict(progress=True, check_hash=True)
        except Exception as exc:  # offline, proxy, disk full, corrupt download...
            raise WeightsUnavailable(
                f"cannot load {weights} ({first_line(exc)}). Ways out: connect once to the internet so "
                f"torchvision downloads them to {path}; or pass weights=FILE with a {self.model} state dict; "
                "or pass weights=random (for tests and timing only)") from None
        return ResolvedWeights(identity=f"torchvision:{weights} sha256:{file_sha256(path)}", state_dict=state)

    # --- the network and its cut -----------------------------------------------------------------
    def network(self, weights, input_size=None):
        import warnings
        from torchvision.models import get_model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # googlenet/inception: a notice about init defaults
            network = get_model(self.model, weights=None, **self._architecture())
        return self.load_state(network, weights)

    def _architecture(self) -> dict:
        """The builder's arguments that its weights fix (what torchvision's builders set when given
        them), so random or file weights get the very network the pretrained ones fit."""
        weights = self.weights_enum
        kwargs = {"num_classes": len(weights.meta["categories"])}
        if self.model.startswith("vit_"):
            kwargs["image_size"] = weights.meta["min_size"][0]
        if self.model in ("googlenet", "inception_v3"):
            kwargs.update(aux_logits=True, transform_input=True, init_weights=False)
        return kwargs

    def cut(self, network, layers, shapes=None):
        from .cut import NodeCut
        return NodeCut(network, {layer: self._node(network, layer) for layer in layers}, shapes, self.maps)

    def _node(self, network, layer):
        if layer == PRE_LOGITS:
            if self._pre_logits_node is None:
                self._pre_logits_node = pre_logits_node(network)
            return self._pre_logits_node
        return {**VGG_LAYERS, **VGG_MAPS}.get(layer, layer) if self.model.startswith("vgg") else layer

    def top(self, network, layer):
        """VGG above pool5: its adaptive pool to 7 x 7, then fc6 and fc7 (with their ReLU and
        dropout); the final classifier is fc8."""
        from torch import nn
        if layer not in self.maps:
            return super().top(network, layer)
        return nn.Sequential(network.avgpool, nn.Flatten(1), *network.classifier[:-1]), network.classifier[-1]

    def other_layers(self) -> list:
        return ([PRE_LOGITS] if PRE_LOGITS not in self.layers else []) + graph_nodes(self)

    def more_layers_hint(self) -> str:
        return (f", or a graph node of {self.model} (`cnncodes backbones {self.name} --nodes` lists them; "
                "maps are averaged over H and W)")


def graph_nodes(spec) -> list:
    """The eval-mode graph's node names (create_feature_extractor's vocabulary)."""
    from torchvision.models.feature_extraction import get_graph_node_names
    return list(on_meta_else_cpu(lambda: get_graph_node_names(random_network(spec))[1]))


def pre_logits_node(network) -> str:
    """The input of the network's last Linear or Conv2d in its eval graph: what the classifier reads."""
    import torch
    from torch import fx
    from torchvision.models.feature_extraction import NodePathTracer
    tracer = NodePathTracer()
    graph = tracer.trace(network.eval())
    modules = dict(network.named_modules())
    last = None
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), (torch.nn.Linear, torch.nn.Conv2d)):
            last = node
    if last is None or not isinstance(last.args[0], fx.Node):
        raise ExtractError(f"{type(network).__name__}: no final Linear or Conv2d found; name a graph node with layer=")
    return tracer.node_to_qualname[last.args[0]]
