"""What every backbone family shares: a spec per network name, and the rules common to all.

A family file subclasses `BackboneSpec` with four things only its library knows: how to build
the bare network, how its pretrained weights are found, its preprocessing (read from the
library, never re-typed) and how to cut it at named layers (extract/backbones/cut.py). Building,
weight loading, layer and precision checks and the width probe live here, once.
Importing this module costs no torch import: the command line's help lists specs.
"""
import difflib
import functools
import os

from ..errors import ExtractError, WeightsUnavailable


class BackboneSpec:
    family = ""            # the family's name, as `backbones` lists it
    library = ""           # the distribution that builds the network (its version goes into the fingerprint)
    int8 = False           # measured faster in int8 than fp32 on the CPU (see extract/int8.py)

    def __init__(self, name: str, layers=(), default_layers=None, description="", maps=()):
        self.name = name                      # as typed, and as recorded in the fingerprint
        self.maps = tuple(maps)               # map layers: unpooled, at the boundary of the network's own top
        self.layers = tuple(layers) + self.maps  # layers known by name, the default first
        self._defaults = tuple(default_layers) if default_layers else None
        self.description = description

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"

    # --- what a family provides --------------------------------------------------------------
    def network(self, weights, input_size=None):
        """The bare network on the CPU with ``weights`` (ResolvedWeights) loaded."""
        raise NotImplementedError

    def pretrained_weights(self):
        """The network's pretrained weights, found the library's standard way (ResolvedWeights);
        raises WeightsUnavailable, naming where they go, when they are not on this machine."""
        raise NotImplementedError

    def weights_file(self, path):
        """--weights FILE (an absolute path): a state dict, loaded here (no code in the file runs)."""
        from ..weights import ResolvedWeights, file_sha256, load_state_dict_file
        state = load_state_dict_file(path)
        return ResolvedWeights(identity=f"file:{os.path.basename(path)} sha256:{file_sha256(path)}", state_dict=state)

    def make_preprocess(self):
        """The Preprocess its weights expect, read from the library."""
        raise NotImplementedError

    def cut(self, network, layers, shapes=None):
        """nn.Module: network input -> {layer: [B, D]}. ``shapes`` (from the probe) lets a traced cut
        decide its pooling once, so the module stays traceable for int8."""
        raise NotImplementedError

    def top(self, network, layer):
        """(body, final): the network's own layers above the map ``layer`` (a map [B, C, H, W] in,
        the final classifier's input out) and that final classifier (an nn.Linear), sharing the
        network's modules and weights. What stage two trains on cached maps (classify/heads/network_top.py)."""
        raise ExtractError(f"{self.name} has no map layer to train its top on")

    def other_layers(self) -> list:
        """Layer names accepted beyond ``layers`` (graph nodes, blocks); may build the network."""
        return []

    def weights_here(self) -> bool:
        """Whether the pretrained weights are already on this machine (looked up, never downloaded)."""
        return False

    # --- shared rules ------------------------------------------------------------------------
    @property
    def defaults(self) -> tuple:
        return self._defaults or self.layers[:1]

    @property
    def first_default_layer(self) -> str:
        """The first of the layers extract takes by default."""
        return self.defaults[0]

    @functools.cached_property
    def preprocess(self):
        return self.make_preprocess()

    @property
    def library_version(self) -> str:
        from importlib.metadata import version
        return f"{self.library} {version(self.library)}"

    def check_layers(self, layers) -> tuple:
        layers = tuple(layers) if layers else self.defaults
        if len(set(layers)) != len(layers):
            raise ExtractError(f"layer={','.join(layers)}: a layer is named twice")
        unknown = [name for name in layers if name not in self.layers]
        if unknown:
            offered = list(self.layers) + self.other_layers()
            # a module's name stands for its last node, as create_feature_extractor reads it
            unknown = [name for name in unknown if not any(o == name or o.startswith(name + ".") for o in offered)]
        if unknown:
            raise ExtractError(f"layer={','.join(unknown)}: {self.name} has no such layer"
                               f"{did_you_mean(unknown[0], offered)}; named layers: {', '.join(self.layers)}"
                               f"{self.more_layers_hint()}")
        return layers

    def more_layers_hint(self) -> str:
        return ""

    def check_precision(self, precision: str) -> None:
        if precision == "int8" and not self.int8:
            raise ExtractError(f"precision=int8: not offered for {self.name} (only vgg16's int8 kernels were "
                               "measured faster than fp32 on the CPU); use fp32 on the CPU")

    def build(self, weights, layers, input_size=None):
        """The extractor (an nn.Module) in eval mode, on the CPU, with the resolved weights loaded.
        input_size: the crop when it is not the weights' own (families whose network fixes one)."""
        layers = tuple(layers)
        return self.cut(self.weighted_network(weights, input_size).eval(), layers, self.probe(layers)).eval()

    def weighted_network(self, weights, input_size=None):
        """The bare network with ``weights``: a random one (a seed) made once per process and copied."""
        return _seeded_network(self, weights, input_size) if weights.seed is not None else \
            self.network(weights, input_size)

    def load_state(self, network, weights):
        """Load a resolved state dict; a dict of another network is refused in one line."""
        if weights.state_dict is None:
            return network
        try:
            network.load_state_dict(weights.state_dict)
        except RuntimeError as exc:
            raise WeightsUnavailable(f"weights {weights.identity} do not fit {self.name} ({first_line(exc)}); "
                                     f"pass a state dict saved from a {self.name} model") from None
        return network

    def widths(self, layers, crop=None) -> dict:
        """layer -> code width, probed by one forward (no weights needed); a map's at ``crop``."""
        shapes = self.probe(tuple(layers), crop)
        return {layer: _product(shape[1:]) if layer in self.maps else code_width(shape) for layer, shape in shapes.items()}

    def map_shapes(self, layers, crop=None) -> dict:
        """map layer -> [C, H, W] of its stored map at ``crop`` (default: the weights' own)."""
        maps = tuple(layer for layer in layers if layer in self.maps)
        return {layer: list(shape[1:]) for layer, shape in self.probe(maps, crop).items()} if maps else {}

    def probe(self, layers: tuple, crop=None) -> dict:
        """layer -> output shape of the cut network before pooling, at ``crop`` (default: the
        weights' own input size)."""
        return _probe(self, tuple(layers), crop or self.preprocess.crop)


def code_width(shape) -> int:
    """Width of a layer's code: channels of a map [B, C, H, W], features of tokens [B, N, D]."""
    return int(shape[1] if len(shape) == 4 else shape[-1] if len(shape) == 3 else _product(shape[1:]))


def _product(dims) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


_SEEDED = {}      # (backbone, seed, input size) -> (network, torch's RNG state after making it)
SEEDED_KEPT = 2  # networks kept: a process that builds the same random network again copies it


def _seeded_network(spec, weights, input_size):
    """A randomly initialised network (torch seeded with the weights' seed), built once per process
    and copied after that (copying is several times cheaper: docs/benchmarks.md); torch's RNG is left as the
    first build left it, so what follows draws the same numbers either way."""
    import copy

    import torch
    key = (spec.name, weights.seed, input_size)
    if key not in _SEEDED:
        torch.manual_seed(weights.seed)
        network = spec.network(weights, input_size)
        while len(_SEEDED) >= SEEDED_KEPT:
            _SEEDED.pop(next(iter(_SEEDED)))
        _SEEDED[key] = (network, torch.get_rng_state())
    network, state = _SEEDED[key]
    torch.set_rng_state(state)
    return copy.deepcopy(network)


@functools.lru_cache(maxsize=64)
def _probe(spec, layers, crop):
    """One forward of a randomly initialised copy at batch 1 (on the meta device where it can be)."""
    import torch

    def forward():
        cut = spec.cut(random_network(spec), layers)
        with torch.no_grad():
            out = cut(torch.zeros(1, 3, crop, crop))
        return {layer: tuple(out[layer].shape) for layer in layers}
    return on_meta_else_cpu(forward)


def random_network(spec):
    """The spec's network, randomly initialised (seed 0), in eval mode: for shapes and names."""
    from ..weights import ResolvedWeights
    return spec.network(ResolvedWeights(identity="random:0", seed=0)).eval()


def on_meta_else_cpu(work):
    """``work()`` with tensors made on the meta device (no memory, no arithmetic), or on the CPU
    where a network cannot be built or run there (one that reads a tensor's values as it builds)."""
    import torch
    try:
        with torch.device("meta"):
            return work()
    except (NotImplementedError, RuntimeError, TypeError, AssertionError):
        with torch.device("cpu"):
            return work()


def require(module: str, install: str):
    """An optional library, or the one line that says how to install it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExtractError(install) from None


def in_hf_cache(repo, filenames):
    """The first of ``filenames`` the Hugging Face cache holds for ``repo``, or None (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = (try_to_load_from_cache(repo, name) for name in filenames)
    return next((path for path in found if isinstance(path, str)), None)


def matching(names, pattern) -> list:
    """``names`` matched whole by a shell pattern (all of them without one)."""
    import fnmatch
    return [n for n in names if not pattern or fnmatch.fnmatch(n, pattern)]


def first_line(exc: BaseException) -> str:
    """An exception as the short reason inside a one-line error (a download's, a library's)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""
