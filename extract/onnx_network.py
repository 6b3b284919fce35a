"""`extract --runtime onnxruntime`: the cut network run by ONNX Runtime on the CPU.

The network (cut at the cache's layers, as torch runs it) is exported once per fingerprint with
torch.export's exporter and kept in the user's cache folder (~/.cache/cnncodes/onnx, or
$CNNCODES_ONNX_DIR), so later runs and every worker load it in a second. It stands in for the
torch module inside the encoder: normalised float32 batch in, {layer: codes} out. Its codes
differ from torch fp32 by float rounding only (docs/benchmarks.md: cosine figures); the fingerprint records
the precision as ``onnxruntime-fp32``.
"""
import hashlib
import json
import os

import numpy as np
import torch
from torch import nn

from .errors import ExtractError

PRECISION = "onnxruntime-fp32"


def onnx_dir() -> str:
    return os.environ.get("CNNCODES_ONNX_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "cnncodes", "onnx")


class OnnxNetwork(nn.Module):
    """An ONNX Runtime session behaving as the cut network: x [B, 3, H, W] -> {layer: [B, D]}."""

    def __init__(self, path, layers):
        super().__init__()
        import onnxruntime as ort
        self.path, self.layers = path, tuple(layers)
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def forward(self, x):
        out = self.session.run(list(self.layers), {"x": np.ascontiguousarray(x.detach().float().cpu().numpy())})
        return {layer: torch.from_numpy(codes) for layer, codes in zip(self.layers, out)}


def _key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def onnx_network(build, identity: dict, layers, crop) -> OnnxNetwork:
    """The session for a cut network. build(): the torch cut (called only when no exported file
    exists for ``identity``: the fingerprint's fields that decide the graph, and torch's version)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ExtractError("runtime=onnxruntime needs `pip install 'cnncodes[deploy]'` (onnx, onnxscript, "
                           "onnxruntime)") from None
    folder = onnx_dir()
    path = os.path.join(folder, f"{_key({**identity, 'torch': torch.__version__})}.onnx")
    if not os.path.isfile(path):
        os.makedirs(folder, exist_ok=True)
        export_graph(_Outputs(build().eval(), layers), torch.zeros(2, 3, crop, crop), path, "x", layers)
    return OnnxNetwork(path, layers)


class _Outputs(nn.Module):
    """The cut's dict as a tuple in layer order (the graph's outputs are named after the layers)."""

    def __init__(self, cut, layers):
        super().__init__()
        self.cut, self.layers = cut, tuple(layers)

    def forward(self, x):
        out = self.cut(x)
        return tuple(out[layer] for layer in self.layers)


def export_graph(module, example, path, input_name, output_names, opset=None):
    """``module`` as one ONNX file at ``path`` (weights inside), batch dimension dynamic, through
    torch.export's exporter (it writes what the TorchScript one refuses, e.g. VGG16's adaptive
    pool at crops other than 224); written beside and renamed, so nobody loads half a file."""
    import contextlib
    import io
    import warnings
    tmp = f"{path}.{os.getpid()}.tmp"
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's progress lines and notes on the traced graph
        torch.onnx.export(module, (example,), tmp, input_names=[input_name], output_names=list(output_names),
                          dynamic_shapes={input_name: {0: torch.export.Dim("batch")}}, opset_version=opset,
                          dynamo=True, external_data=False, verbose=False)
    os.replace(tmp, path)
