"""What a fit reports: ``FitResult`` (a fitted classifier, measured on the reported split) and
``Skipped`` (one compare could not fit). Typed fields to read in Python; ``to_dict()`` is the JSON
that `fit --json`, `compare --json`, report.json and a model file's meta hold.

Both also read like that JSON (``result["accuracy"]``, ``"skipped" in result``), so code and
notebooks written against the dicts keep working.
"""
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np


class _ReadsLikeItsJson(Mapping):
    """Reads like its JSON: each key is a field read in place (no JSON built per lookup)."""

    def _json_names(self) -> list:
        return [f.name for f in fields(self)]

    def __getitem__(self, key):
        if key not in self._json_names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._json_names())

    def __len__(self):
        return len(self._json_names())


@dataclass(eq=False)
class FitResult(_ReadsLikeItsJson):
    classifier: str
    layer: str
    scaling: str
    eval_split: str         # the split the metrics are measured on
    selection: str          # how hyper-parameters were chosen (never on the reported rows)
    n_fit: int
    rows_used: int          # rows the fit could use (a subsample when the codes exceed the budget)
    rows_total: int
    n_eval: int
    accuracy: float
    accuracy_ci95: tuple    # Wilson 95% interval
    balanced_accuracy: float
    macro_f1: float
    per_class_accuracy: dict
    confusion_matrix: list
    fit_seconds: float
    params: dict            # the chosen hyper-parameters
    sweep: list             # [{params, selection_accuracy}] for every candidate tried
    memory: str             # how the rows were held
    mistakes: list          # [{row, path, true, predicted, probability}], most confident first
    unlabeled_left_out: int = None
    excluded: dict = None
    fixed: dict = None      # hyper-parameters the caller fixed (not chosen by the sweep)
    # Set by compare: McNemar's exact p against the best on the same reported rows (None for the
    # best itself), and whether the data can tell them apart.
    p_vs_best: float = None
    indistinguishable_from_best: bool = None
    compared: bool = field(default=False, repr=False)
    # Whether each reported row was right: what the paired test reads; never in the JSON.
    eval_correct: np.ndarray = field(default=None, repr=False)
    # Each reported row's cache row, predicted class and its probability: what report.html shows
    # (a confusion cell's photos); never in the JSON.
    eval_rows: np.ndarray = field(default=None, repr=False)
    eval_predicted: np.ndarray = field(default=None, repr=False)
    eval_probability: np.ndarray = field(default=None, repr=False)

    _INTERNAL = ("compared", "eval_correct", "eval_rows", "eval_predicted", "eval_probability")
    _OPTIONAL = ("unlabeled_left_out", "excluded", "fixed")
    _PAIRED = ("p_vs_best", "indistinguishable_from_best")

    def __repr__(self) -> str:
        low, high = self.accuracy_ci95 or (float("nan"), float("nan"))
        chosen = ", ".join(f"{k}={v}" for k, v in self.params.items()) or "no hyper-parameters"
        return (f"FitResult({self.classifier} on {self.layer}: accuracy {self.accuracy:.4f} "
                f"[{low:.3f}, {high:.3f}] on {self.n_eval:,} {self.eval_split} rows; {chosen})")

    def _json_names(self) -> list:
        return [f.name for f in fields(self) if not (
            f.name in self._INTERNAL or (f.name in self._OPTIONAL and not getattr(self, f.name))
            or (f.name in self._PAIRED and not self.compared))]

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self._json_names()}

    @classmethod
    def from_dict(cls, d: dict) -> "FitResult":
        """A result as a model file's meta keeps it (without its sweep and mistakes)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values.setdefault("sweep", [])
        values.setdefault("mistakes", [])
        values["accuracy_ci95"] = tuple(values.get("accuracy_ci95", ()))
        return cls(**values, compared="p_vs_best" in d)

    def without_details(self) -> dict:
        """The JSON without the sweep and the mistakes (what a model file keeps)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("sweep", "mistakes")}


@dataclass(eq=False)
class Skipped(_ReadsLikeItsJson):
    """A classifier compare could not fit on these rows, and why; the others still ran."""
    classifier: str
    skipped: str

    def to_dict(self) -> dict:
        return {"classifier": self.classifier, "skipped": self.skipped}


def as_json(results) -> list:
    return [r.to_dict() for r in results]
