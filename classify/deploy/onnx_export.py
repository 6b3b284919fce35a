"""A fitted model as one ONNX graph: uint8 image batch -> class probabilities, and the codes.

The graph is the model's own extractor (the backbone cut at the cached layers, as predict builds
it from the fingerprint), the layers side by side, the rounding to the cache's stored dtype (what
the head was trained on), the scaler and the head, written with standard operators only (Conv,
Gemm/MatMul, Softmax...; no ``ai.onnx.ml``), so any ONNX runtime runs it. Its metadata holds the
class names and the exact preprocessing; classify/deploy/onnx_predict.py reads both and needs no torch.

A second output, ``codes`` [B, D], is what the head reads: the model's layer(s) side by side, rounded
to the cache's stored dtype, i.e. a row as the cache stores it. `serve --similar CACHE` searches a
cache of the same fingerprint with it (one session gives both); the metadata's ``fingerprint`` (the
compared fields of the model's cache fingerprint) is what it checks the cache against.
"""
import json

import numpy as np
import torch
from torch import nn

from ..errors import ClassifyError
from .onnx_predict import CODES, FORMAT, INPUT, OUTPUT

OPSET = 18


class _Affine(nn.Module):
    """x @ W.T + b (a Gemm); a binary margin head's one column z becomes [-z/2, z/2], whose
    softmax is the sigmoid of z, as the heads' own predict_proba gives."""

    def __init__(self, coef, intercept):
        super().__init__()
        coef, intercept = np.atleast_2d(coef), np.atleast_1d(intercept)
        self.binary = coef.shape[0] == 1
        self.linear = nn.Linear(coef.shape[1], coef.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(torch.as_tensor(coef, dtype=torch.float32))
            self.linear.bias.copy_(torch.as_tensor(intercept, dtype=torch.float32))

    def forward(self, x):
        z = self.linear(x)
        return torch.cat([-z / 2, z / 2], dim=1) if self.binary else z


def _scaler(step) -> nn.Module:
    from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler
    if isinstance(step, StandardScaler):
        mean = step.mean_ if step.with_mean and step.mean_ is not None else np.zeros(step.n_features_in_)
        scale = step.scale_ if step.with_std and step.scale_ is not None else np.ones(step.n_features_in_)
        return _Standard(mean, scale)
    if isinstance(step, Normalizer) and step.norm == "l2":
        return _L2()
    if isinstance(step, FunctionTransformer) and step.func is None:
        return nn.Identity()
    raise ClassifyError(f"export-model: scaler {type(step).__name__} has no graph here")


class _Standard(nn.Module):
    def __init__(self, mean, scale):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean), dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale), dtype=torch.float32))

    def forward(self, x):
        return (x - self.mean) / self.scale


class _L2(nn.Module):
    def forward(self, x):  # scikit-learn's Normalizer: a zero row stays zero
        norm = torch.sqrt((x * x).sum(dim=1, keepdim=True))
        return x / torch.where(norm == 0, torch.ones_like(norm), norm)


class _MLP(nn.Module):
    def __init__(self, head):
        super().__init__()
        self.hidden, self.out = _Affine(head.w1_, head.b1_), _Affine(head.w2_, head.b2_)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


# How each kind of head's scores [B, K] become a module; the registry entry says which kind
# (ClassifierSpec.export), or why a head is not exported (ClassifierSpec.no_export).
EXPORTS = {
    "affine": lambda head: _Affine(head.coef_, head.intercept_),
    "mlp": lambda head: _MLP(head),
    "network": lambda head: head._trained().float().cpu(),
}


def _scores(step) -> nn.Module:
    """The head's scores [B, K] as a module, for the heads whose probabilities are their softmax."""
    from ..registry import spec_of_head
    spec = spec_of_head(step)
    if spec.no_export:
        raise ClassifyError(f"export-model: {spec.no_export}")
    return EXPORTS[spec.export](step)


class _Pipeline(nn.Module):
    """(scale, clf) -> probabilities."""

    def __init__(self, pipeline):
        super().__init__()
        self.scale, self.scores = _scaler(pipeline.named_steps["scale"]), _scores(pipeline.named_steps["clf"])

    def forward(self, x):
        return torch.softmax(self.scores(self.scale(x)), dim=1)


class _Vote(nn.Module):
    """The ensemble: the mean of its members' probabilities (VotingClassifier, soft, unweighted)."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


def head_module(pipeline) -> nn.Module:
    """A fitted (scale, clf) Pipeline or soft vote of them -> module: codes -> probabilities."""
    if hasattr(pipeline, "named_estimators_"):
        from ..heads.ensemble import members_of
        return _Vote([_Pipeline(member) for _, member in members_of(pipeline)])
    return _Pipeline(pipeline)


class Deployed(nn.Module):
    """uint8 [B, 3, crop, crop] (resized and centre-cropped RGB) -> probabilities [B, K]."""

    def __init__(self, network, layers, preprocess, storage_dtype, head):
        super().__init__()
        self.network, self.layers, self.head = network, tuple(layers), head
        self.normalize = preprocess.normalizer("cpu")  # the encoder's own (uint8 -> normalised float32)
        self.half = np.dtype(storage_dtype) == np.float16

    def codes(self, image):
        """uint8 images -> the codes the head reads [B, D]: the layers side by side, as the cache stores them."""
        out = self.network(self.normalize(image))
        codes = torch.cat([out[layer] for layer in self.layers], dim=1)
        if self.half:  # the codes as the cache stored them, as predict rounds them
            codes = codes.half().float()
        return codes

    def forward(self, image):
        return self.head(self.codes(image))


class WithCodes(nn.Module):
    """The exported graph's two ends: (probabilities [B, K], codes [B, D]) from one forward pass."""

    def __init__(self, deployed: Deployed):
        super().__init__()
        self.deployed = deployed

    def forward(self, image):
        codes = self.deployed.codes(image)
        return self.deployed.head(codes), codes


def deployed_model(model, weights_file=None) -> tuple:
    """(Deployed module in eval mode, fp32, on the CPU; the fingerprint's Preprocess) of a LoadedModel."""
    from ...extract.config import RunOptions, layer_names
    from ...extract.extractor import Extractor
    if model.side_by_side:
        raise ClassifyError("export-model: codes of several caches side by side (with_caches=) are not exported yet; "
                            "export a model fitted on one cache")
    if model.fingerprint.quantization:
        raise ClassifyError("export-model: int8 codes come from torch's quantized kernels, which this export does "
                            "not write; fit on a float cache (precision=fp32, bf16 or auto) to export")
    extractor = Extractor.from_fingerprint(model.fingerprint.with_precision("fp32"), weights_file,
                                           RunOptions(device="cpu"), keep_precision=True)
    deployed = Deployed(extractor.model, layer_names(model.layer), extractor.preprocess, model.fingerprint.dtype,
                        head_module(model.pipeline))
    return deployed.eval().float(), extractor.preprocess


def metadata(model, preprocess) -> dict:
    """What a runtime needs beside the graph: classes in output order and the preprocessing."""
    return {"format": FORMAT, "class_names": json.dumps([model.class_names[int(i)] for i in model.classes]),
            "preprocess": json.dumps(preprocess.to_dict()), "input": INPUT, "output": OUTPUT,
            "backbone": model.fingerprint.backbone, "layer": model.layer, "weights": model.fingerprint.weights,
            "classifier": model.meta.get("classifier", ""), "codes": CODES,
            "fingerprint": json.dumps(_compared(model.fingerprint), default=str),
            "input_layout": "uint8 RGB [batch, 3, crop, crop]: the shorter side resized to `resize` "
                            "(both sides when `squash`) with `interpolation`, then the centre crop; "
                            "normalisation is inside the graph"}


def _compared(fingerprint) -> dict:
    """The fingerprint's fields that decide whether two codes are comparable (cache/fingerprint.py's list)."""
    from ...cache.fingerprint import COMPARED_FINGERPRINT_KEYS
    return {key: fingerprint.value(key) for key in COMPARED_FINGERPRINT_KEYS}


def export_onnx(model_path, out_path, weights_file=None, opset=OPSET) -> dict:
    """Write ``out_path`` (one file, weights inside) from a model file (or a fitted model: what
    load_model gives, or cnncodes.Model); returns a summary dict."""
    import os

    import onnx
    from ...extract.onnx_network import export_graph
    from ..model_file import read_model_file
    model = model_path if hasattr(model_path, "pipeline") else read_model_file(model_path)
    deployed, preprocess = deployed_model(model, weights_file)
    example = torch.zeros(2, 3, preprocess.crop, preprocess.crop, dtype=torch.uint8)
    tmp = f"{out_path}.tmp"
    export_graph(WithCodes(deployed), example, tmp, INPUT, [OUTPUT, CODES], opset)
    graph = onnx.load(tmp)
    for key, value in metadata(model, preprocess).items():
        graph.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(graph)
    onnx.save(graph, tmp)
    os.replace(tmp, out_path)
    return {"path": out_path, "bytes": os.path.getsize(out_path), "classes": len(model.classes),
            "crop": preprocess.crop, "backbone": model.fingerprint.backbone, "layer": model.layer}
