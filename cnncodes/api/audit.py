"""`audit`: what is wrong with the data, found from the codes, as one AuditReport."""
import os
from dataclasses import asdict, dataclass, field


@dataclass(repr=False)
class AuditReport:
    """What audit found. Lists: ``exact_duplicates`` and ``near_duplicates`` (groups of rows),
    ``leaked`` (reported-split photos with a twin in train), ``label_issues``, ``outliers``;
    ``exclude``: the paths fit's ``exclude=`` should drop; ``counts``: the tally of each;
    ``effect_on_score``: the reported accuracy with and without the leaked photos."""
    cache: str
    backbone: str
    layer: str
    photos: int
    threshold: float
    threshold_source: str
    k: int
    search: str        # how the near pairs and each photo's nearest were found, in words
    search_kind: str   # which search: "exact" (every pair), "cells" (k-means cells) or the faiss index's kind
    exact_duplicates: list
    near_duplicates: list
    leaked: list
    train_twins_of_leaked: list
    label_rule: str
    label_issues_total: int
    label_issues: list
    outliers: list
    counts: dict
    exclude: list
    effect_on_score: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)  # what loading decided (rows left out, a subsample)
    report: dict = None                         # {file name: path} when a report folder was given

    def to_dict(self) -> dict:
        """What `cnncodes audit --json` prints (and audit.json holds, less notes and report)."""
        return asdict(self)

    def lines(self) -> list:
        """The summary as the command line prints it."""
        from ..classify.audit.report import summary_lines
        return summary_lines(self.to_dict())

    def __repr__(self) -> str:
        said = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.counts.items())
        return f"AuditReport({self.cache}: {self.photos:,} photos, layer {self.layer}: {said})"

    def _repr_html_(self) -> str:
        from ._display import html_table
        rows = [[k.replace("_", " "), v] for k, v in self.counts.items()]
        effect = self.effect_on_score or {}
        if "skipped" not in effect:
            rows += [[f"effect on score: {k.replace('_', ' ')}", v] for k, v in effect.items()
                     if isinstance(v, (int, float, str))]
        return html_table(["finding", "count"], rows,
                          caption=f"audit of {self.cache}: {self.photos:,} photos, layer {self.layer}, threshold "
                                  f"{self.threshold}",
                          note="the lists: .exact_duplicates, .near_duplicates, .leaked, .label_issues, .outliers; "
                               ".exclude for fit's exclude=")


def audit(cache, *, layer="first", threshold=None, k=5, limit=50, seed=0, report=None, search="auto",
          **load_options) -> AuditReport:
    """What is wrong with the data, found from the codes: exact and near duplicates, train/eval
    leaks, likely label errors, outliers, and the leaks' effect on the score. The command line's
    defaults by construction. layer: "first" (the cache's first layer, what the threshold is
    calibrated on), a name, "a,b", or None for every code layer side by side. limit: likely label
    errors and outliers listed. report: a folder for audit.md, audit.json and the picture sheets.
    search: how near pairs are found: "auto" (every pair exactly up to 100,000 photos, beyond within
    k-means cells), "exact", "cells", or "index" (beyond 100,000 photos each photo's nearest from the
    cache's faiss index of the layer, `cnncodes index`; without one, as "auto"). The report's
    ``search_kind`` says which was used: "exact", "cells" or the index's kind.
    load_options: max_memory, exclude, exclude_reported, as load_codes takes them."""
    from ..classify.audit import find_problems
    from ..classify.audit import effect_on_score
    from ..classify.errors import ClassifyError
    from .codes import load_every_row
    from .layers import reading_layer
    cache = os.fspath(cache)
    # The codes as stored (float16: half the memory, read 3-4x faster than a float32 copy); each
    # step converts what it computes on, a block or a gathered sample at a time.
    data = load_every_row(cache, reading_layer(cache, layer), seed=seed, stored=True, **load_options)
    found = find_problems(data, threshold=threshold, k=k, limit=limit, seed=seed, search=search)
    try:
        found["effect_on_score"] = effect_on_score(data, found["leaked"], seed)
    except ClassifyError as exc:  # no split to report on, say: the audit itself still stands
        found["effect_on_score"] = {"skipped": str(exc)}
    if report is not None:
        from ..classify.audit.report import write_audit
        found["report"] = write_audit(os.fspath(report), found, data.fingerprint.provenance.get("data_root"), data)
    return AuditReport(**found, notes=data.notes)
