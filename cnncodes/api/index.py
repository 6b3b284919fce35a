"""`index`: a faiss index of a cache's codes, stored beside it (CACHE.faiss/) and kept in step with
it, so that `similar` and the audit need not read every row per query. faiss-cpu is the optional
extra ``index``; without it everything searches exactly, as before."""
import os
from dataclasses import dataclass


@dataclass(repr=False)
class IndexSummary:
    """index's answer: what the cache's index of ``layer`` holds now and what this call did."""
    cache: str
    layer: str
    kind: str
    rows: int       # the cache's rows
    indexed: int    # of them in the index (the rest are searched exactly)
    added: int      # rows this call added
    gone: int       # ids whose row left the cache (filtered out of every answer)
    rebuilt: bool   # built from scratch (else brought up to date)
    seconds: float
    folder: str

    def to_dict(self) -> dict:
        """What `cnncodes index --json` prints."""
        return {"cache": self.cache, "layer": self.layer, "kind": self.kind, "rows": self.rows,
                "indexed": self.indexed, "added": self.added, "gone": self.gone, "rebuilt": self.rebuilt,
                "seconds": round(self.seconds, 3), "folder": self.folder}

    def lines(self) -> list:
        how = "built" if self.rebuilt else ("brought up to date" if self.added or self.gone else "already up to date")
        return [f"{self.folder}: {self.kind} index of layer {self.layer}, {how} in {self.seconds:.1f} s: "
                f"{self.indexed:,} of {self.rows:,} rows, {self.added:,} added"
                + (f", {self.gone:,} gone rows filtered out" if self.gone else "")]

    def __repr__(self) -> str:
        return (f"IndexSummary({self.kind} of {self.cache} layer {self.layer}: {self.indexed:,}/{self.rows:,} rows, "
                f"{self.added:,} added, {self.seconds:.1f} s)")


def index(cache, *, layer="first", kind=None, rebuild=False, max_memory=None, on_step=None) -> IndexSummary:
    """Build the faiss index of one code layer of ``cache`` (stored beside it, in CACHE.faiss/), or
    bring it up to date: only the rows it lacks are added, rows gone from the cache leave its answers.
    kind: None (by size: flat, hnsw, ivf, ivfpq), or one of those; rebuild: build from scratch;
    max_memory: codes read at a time. Needs faiss (the extra ``index``)."""
    from ..classify.budget import memory_budget
    from ..classify.errors import ClassifyError
    from ..classify.index import build
    from .layers import reading_layer
    cache = os.fspath(cache)
    if layer is None:
        raise ClassifyError("layer=None: an index holds one layer; give layer='first' or a layer's name")
    layer = reading_layer(cache, layer)
    from ..cache import open_cache
    with open_cache(cache) as c:
        c.width(layer)  # an unknown layer: the cache's own one-line error
    done = build(cache, layer, kind=kind, rebuild=rebuild, budget_bytes=memory_budget(max_memory), on_step=on_step)
    return IndexSummary(cache, layer, done["kind"], done["rows"], done["indexed"], done["added"], done["gone"],
                        done["rebuilt"], done["seconds"], done["folder"])


def update_indexes(cache) -> dict:
    """After an extract: bring each index the cache has up to date (only its new rows are added), so
    searches stay fast without a separate `cnncodes index`. Returns {layer: rows added}, or
    {layer: "why not"} where it could not be (faiss not installed, a writer committing): the index
    then stays as it was, valid, and the rows it lacks are searched exactly."""
    from ..classify.budget import memory_budget
    from ..classify.errors import ClassifyError
    from ..classify.index import INSTALL, build, faiss_module, indexed_layers
    cache = os.fspath(cache)
    layers = indexed_layers(cache)
    if layers and faiss_module() is None:
        return {layer: f"not updated: faiss is not installed ({INSTALL})" for layer in layers}
    done = {}
    for layer in layers:
        try:
            done[layer] = build(cache, layer, budget_bytes=memory_budget(None))["added"]
        except ClassifyError as exc:
            done[layer] = f"not updated: {exc}"
    return done
