"""`backbones`: the names extract can use, as a result that reads like the list of them."""
from dataclasses import dataclass, field


@dataclass
class Backbones:
    """list_backbones' answer: ``rows`` (one dict per name: name, library, default layers, width
    where probed), ``notes``. Iterates, indexes and tests membership over the names."""
    pattern: str = None
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def names(self) -> list:
        return [row["name"] for row in self.rows]

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.names[i]

    def __contains__(self, name) -> bool:
        return name in self.names

    def to_dict(self) -> dict:
        """What `cnncodes backbones PATTERN --json` prints."""
        return {"backbones": self.rows, "notes": self.notes}

    def __repr__(self) -> str:
        shown = ", ".join(self.names[:6]) + (", ..." if len(self) > 6 else "")
        return f"Backbones({len(self)} names{' matching ' + repr(self.pattern) if self.pattern else ''}: {shown})"


def list_backbones(pattern=None, *, probe=None) -> Backbones:
    """Names extract can use (torchvision, EfficientNet-Lite; timm and open_clip with a pattern),
    as `cnncodes backbones PATTERN` lists them: ``list_backbones("timm:*dinov2*")``. probe: build
    each network to read its code width (default: when the pattern matches few names)."""
    import warnings

    from ..extract.backbones.listing import list_backbones as rows_of
    with warnings.catch_warnings():  # the zoo libraries import tqdm.auto, which warns in a kernel
        warnings.filterwarnings("ignore", message="IProgress not found")  # without ipywidgets
        rows, notes = rows_of(pattern, probe=probe)
    return Backbones(pattern, rows, notes)
