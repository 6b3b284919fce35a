"""`compare`: every classifier on identical splits and seeds, as one Comparison."""
import os
from dataclasses import dataclass

from .codes import LOAD_OPTIONS, codes_from


@dataclass(repr=False)
class Comparison:
    """compare's results: ``results`` (a FitResult per classifier, or a Skipped, in order; the
    Comparison iterates and indexes over them), ``.best``, and the codes they were fitted on."""
    results: list
    data: object
    scaling: str
    seed: int

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i):
        return self.results[i]

    @property
    def best(self):
        """The most accurate FitResult (None when every classifier was skipped)."""
        from ..classify.report import best_result, fitted_results
        return best_result(self.results) if fitted_results(self.results) else None

    def to_dict(self) -> dict:
        """What `compare --json` prints: where, how, the best, and each result as FitResult.to_dict()."""
        best = self.best
        return {"cache": self.data.path, "layer": self.data.layer, "scaling": self.scaling, "seed": self.seed,
                "eval_split": best and best.eval_split, "best": best and best.classifier,
                "results": [r.to_dict() for r in self.results]}

    def table(self, markdown=False) -> str:
        from ..classify.report import format_table
        return format_table(self.results, markdown)

    def __repr__(self) -> str:
        best = self.best
        said = f"best {best.classifier} {best.accuracy:.4f} on {best.n_eval:,} {best.eval_split} rows" if best else \
            "every one skipped"
        return f"Comparison({len(self)} classifiers on {self.data.path} ({self.data.layer}): {said})"

    def _repr_html_(self) -> str:
        from ..classify.report import TABLE_NOTE, table_cells
        from ._display import html_table
        header, rows = table_cells(self.results)
        return html_table(header, rows, caption=f"{self.data.path}, layer {self.data.layer}: "
                          f"{len(self.data):,} labelled rows, scaling {self.scaling}, seed {self.seed}", note=TABLE_NOTE)

    def write_report(self, out_dir) -> dict:
        """report.md, report.json and the plots into ``out_dir``; returns {name: path}."""
        from ..classify.report import write_report
        data = self.data
        return write_report(os.fspath(out_dir), self.results, data, {
            "cache": " + ".join([data.path] + [part["cache"] for part in data.side_by_side or []]),
            "backbone": data.fingerprint.backbone, "weights": data.fingerprint.weights,
            "layer": data.layer, "scaling": self.scaling, "seed": self.seed})


def compare(codes, classifiers=None, *, scaling=None, seed=0, on_result=None, params=None, **load_options):
    """Every classifier (or ``classifiers``: names, or "a,b") on identical splits and seeds.
    params: hyper-parameters to fix, per classifier: ``{"logreg": {"C": 1.0}}``. load_options: as
    load_codes takes them, when codes is a cache path.
    Returns a Comparison: the FitResults, .best, .table(), .to_dict(), .write_report(dir)."""
    from ..classify import DEFAULT_SCALING
    from ..classify import compare as compare_all
    from ..classify.registry import did_you_mean
    from .fit import check_hyper_parameters
    unknown = [k for k in load_options if k not in LOAD_OPTIONS]
    if unknown:
        raise TypeError(f"compare() has no option {unknown[0]!r}{did_you_mean(unknown[0], LOAD_OPTIONS)}; "
                        f"hyper-parameters go in params={{'logreg': {{'C': 1.0}}}}; load options: "
                        f"{', '.join(LOAD_OPTIONS)}")
    names = [n.strip() for n in classifiers.split(",") if n.strip()] if isinstance(classifiers, str) else classifiers
    for name, fixed in (params or {}).items():
        check_hyper_parameters(name, fixed)
    data = codes_from(codes, seed=seed, **load_options)
    scaling = scaling or DEFAULT_SCALING
    return Comparison(compare_all(data, names, scaling, seed, on_result=on_result, params=params), data, scaling,
                      seed)
