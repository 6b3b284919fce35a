"""How codes are scaled before a head sees them: the vocabulary and the one builder."""
from ..errors import ClassifyError

SCALINGS = ("standard", "l2", "none")
DEFAULT_SCALING = "standard"  # see docs/benchmarks.md: measured against l2 on flowers5 codes


def make_scaler(kind: str):
    from sklearn.preprocessing import FunctionTransformer, Normalizer

    from .standard_scaler import StandardScaler
    if kind == "standard":
        return StandardScaler()
    if kind == "l2":
        return Normalizer(norm="l2")
    if kind == "none":
        return FunctionTransformer(None)  # identity
    raise ClassifyError(f"scaling={kind}: choose one of {', '.join(SCALINGS)}")


def scaler_classes() -> tuple:
    """The classes make_scaler builds (what a model file may name as its scaling step)."""
    from sklearn.preprocessing import FunctionTransformer, Normalizer

    from .standard_scaler import StandardScaler
    return StandardScaler, Normalizer, FunctionTransformer
