"""Where a backbone's weights come from, and how they are named in the cache's fingerprint."""
import hashlib
import os
from dataclasses import dataclass

from .errors import WeightsUnavailable

PRETRAINED_ALIASES = (None, "", "default", "pretrained", "imagenet")


@dataclass
class ResolvedWeights:
    identity: str             # recorded in the cache: name and SHA-256, or random:<seed>
    state_dict: dict = None   # None with a seed: random initialisation
    seed: int = None
    path: str = None          # a file the family's library loads itself (timm, open_clip)


def file_sha256(path) -> str:
    """SHA-256 hex of a file's bytes, read in chunks: a weights file's identity."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_state_dict_file(path) -> dict:
    """A state dict from a file the user names (weights only: no code in the file is run)."""
    if not os.path.isfile(path):
        raise WeightsUnavailable(f"{path}: no such weights file; pass an existing state-dict file to weights=")
    try:
        import torch
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailable(f"{path}: cannot load it as a torch state dict ({exc}); "
                                 "save one with torch.save(model.state_dict(), FILE)") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsUnavailable(f"{path}: holds a {type(obj).__name__}, not a state dict; "
                                 "save one with torch.save(model.state_dict(), FILE)")
    return obj


def resolve_weights(spec, choice) -> ResolvedWeights:
    """--weights: the backbone's pretrained weights (default), random[:SEED], or a state-dict FILE."""
    if choice in PRETRAINED_ALIASES:
        return spec.pretrained_weights()
    if choice == "random" or choice.startswith("random:"):
        seed_text = choice.partition(":")[2] or "0"
        if not seed_text.isdigit():
            raise WeightsUnavailable(f"weights={choice}: the seed must be a whole number, e.g. random:0")
        return ResolvedWeights(identity=f"random:{int(seed_text)}", seed=int(seed_text))
    return spec.weights_file(os.path.abspath(choice))


def weights_for_identity(spec, identity: str, weights_file=None) -> ResolvedWeights:
    """The weights a fingerprint's ``identity`` names (random:SEED, the pretrained ones, or
    ``weights_file`` for file:...), checked by their SHA-256: the ones the codes came from, or an error."""
    if identity.startswith("random:"):
        return resolve_weights(spec, identity)
    if identity.startswith("file:"):
        if not weights_file:
            raise WeightsUnavailable(f"the model was trained on codes from weights {identity}; "
                                     "pass that file with weights=FILE")
        weights = resolve_weights(spec, weights_file)
    else:
        weights = resolve_weights(spec, None)
    if weights.identity.split("sha256:")[-1] != identity.split("sha256:")[-1]:
        raise WeightsUnavailable(f"weights {weights.identity} are not the ones the model was trained with "
                                 f"({identity}); pass the same weights")
    return weights
