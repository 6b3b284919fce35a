"""`similar`: which photos of a cache look like this one? A query is a path the cache holds (its
cached codes) or an image file it does not (encoded with the cache's own extractor, as predict
encodes); the answer is the k nearest rows by cosine: through the cache's faiss index when it has one
(`cnncodes index`), else exact, read within the memory budget."""
import os
from dataclasses import dataclass

import numpy as np


@dataclass(repr=False)
class Neighbours:
    """similar's answer: ``queries``, one dict per query in the order given: {"query", "source":
    "cache" | "image" | "text", "layer", "neighbours": [{"row", "path", "label", "split",
    "score"}]}, nearest first. Iterates and indexes over the queries. ``search``: "exact" or the
    index's kind; ``recall``: with check_recall, {"queries", "recall_at_k"} of the index against the
    exact search on sampled rows of the cache."""
    cache: str
    layer: str
    k: int
    queries: list
    search: str = "exact"
    recall: dict = None

    def __iter__(self):
        return iter(self.queries)

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, i):
        return self.queries[i]

    def to_dict(self) -> dict:
        """What `cnncodes similar --json` prints."""
        out = {"cache": self.cache, "layer": self.layer, "k": self.k, "search": self.search, "queries": self.queries}
        if self.recall is not None:
            out["recall"] = self.recall
        return out

    def lines(self) -> list:
        """The answer as the command line prints it: each query, then its neighbours."""
        out = []
        for result in self.queries:
            how = {"cache": "in the cache", "image": "encoded", "text": "text"}[result["source"]]
            out.append(f"{result['query']} ({how}, layer {result['layer']}):")
            out += [f"  {n['score']:.4f}  {n['path']}  {n['label'] or '-'}  {n['split']}" for n in result["neighbours"]]
        if self.search != "exact":
            out.append(f"(searched through the cache's {self.search} index, not the exact search)")
        if self.recall is not None:
            out.append(f"recall@{self.k} of the {self.search} search against the exact one: "
                       f"{self.recall['recall_at_k']:.4f} on {self.recall['queries']} sampled rows")
        return out

    def __repr__(self) -> str:
        first = self.queries[0] if self.queries else None
        said = (f"; {os.path.basename(first['query'])} -> "
                + ", ".join(f"{os.path.basename(n['path'])} {n['score']:.3f}" for n in first["neighbours"][:3])
                if first else "")
        return f"Neighbours({len(self)} queries, k={self.k}, layer {self.layer} of {self.cache}{said})"

    def write_sheet(self, path, size=128) -> str:
        """A picture sheet: one line per query, the query then its neighbours, each with its score."""
        return write_sheet(self.queries, self.cache, path, size)


def similar(cache, queries=(), *, k=12, text=(), layer="first", max_memory=None, weights=None,
            device="auto", exact=False, check_recall=0) -> Neighbours:
    """The ``k`` nearest rows by cosine to each query, read within ``max_memory``: through the
    cache's faiss index when it has one for the layer (rows committed after it are searched
    exactly), else exact; ``exact``: always the exact search; ``check_recall`` N: also the index's
    recall@k against the exact search on N seeded sampled rows of the cache. A query
    is a path the cache holds (its cached codes; it never answers itself), an image file it does
    not (encoded with the cache's own extractor), or with ``text`` a phrase, for a cache of an
    open_clip ``embedding`` layer (the same model's text tower). Queries are checked before any
    search: a path neither in the cache nor a readable image is an error. layer: "first" (the
    cache's first layer), a name, or None for every code layer side by side."""
    from ..classify.budget import memory_budget
    from ..classify.index import nearest_in_cache
    from ..classify.errors import ClassifyError
    from ._inputs import as_list
    from .layers import reading_layer
    cache = os.fspath(cache)
    queries = [os.fspath(q) for q in as_list(queries, "queries")]
    texts = [text] if isinstance(text, str) else list(text or ())
    if check_recall < 0:
        raise ClassifyError(f"check_recall={check_recall}: give a number of sampled queries, 0 for none")
    if not queries and not texts and not check_recall:
        raise ClassifyError("give at least one query: a path in the cache, an image file, or a text")
    if k < 1:
        raise ClassifyError(f"k {k}: give 1 or more")
    layer = reading_layer(cache, layer)
    in_cache, rows, cached, outside, layer, fingerprint = _cached_queries(cache, queries, layer)
    vectors = np.concatenate([cached, _encoded(fingerprint, outside, texts, layer, cached.shape[1], weights,
                                               device)])
    exclude = np.concatenate([rows, np.full(len(outside) + len(texts), -1)])
    budget = memory_budget(max_memory)
    found, scores, search = nearest_in_cache(cache, layer, vectors, k, budget, exclude, exact)
    recall = _recall(cache, layer, k, check_recall, budget, exact) if check_recall else None
    sources = ["cache"] * len(in_cache) + ["image"] * len(outside) + ["text"] * len(texts)
    answers = _named(cache, in_cache + outside + texts, sources, layer, found, scores)
    order = {q: i for i, q in enumerate(queries + texts)}
    return Neighbours(cache, layer, k, sorted(answers, key=lambda item: order[item["query"]]), search, recall)


def _cached_queries(cache, queries, layer) -> tuple:
    """(queries the cache holds, their rows, their cached codes, the other queries, the layer,
    the fingerprint). A photo on disk the cache holds under the path extract gave it counts as
    held (its cached codes, not a re-encode); a query neither held nor a file is refused."""
    from ..cache import open_cache
    from ..classify.data import all_code_layers
    from ..classify.errors import ClassifyError
    with open_cache(cache) as c:
        layer = layer if layer is not None else all_code_layers(c.layers, c.fingerprint)
        row_of = _rows_of_queries(c, cache, queries)
        files = [q for q in queries if q not in row_of and os.path.isfile(q)]
        if files:
            from .rows import cached_rows_for
            found = cached_rows_for(cache, [os.path.abspath(q) for q in files])
            held = _rows_of_queries(c, cache, sorted({found[a] for a in map(os.path.abspath, files) if a in found}))
            row_of.update({q: held[found[os.path.abspath(q)]] for q in files
                           if found.get(os.path.abspath(q)) in held})
        in_cache = [q for q in queries if q in row_of]
        outside = [q for q in queries if q not in row_of]
        missing = [q for q in outside if not os.path.isfile(q)]
        if missing:
            raise ClassifyError(f"{missing[0]}: neither a path in {cache} nor an image file; give a path as `cnncodes "
                                "info` lists them, or an image to encode")
        rows = np.array([row_of[q] for q in in_cache], dtype=np.int64)
        mask = np.zeros(len(c), dtype=bool)
        mask[rows] = True
        cached = c.codes(layer, rows=mask)  # in row order
        return in_cache, rows, cached[np.searchsorted(np.flatnonzero(mask), rows)], outside, layer, c.fingerprint


def _rows_of_queries(c, cache, queries) -> dict:
    """{query: row} for the queries an open cache holds as paths: through the row hashes kept beside
    an indexed cache (no read of every path: classify/row_hashes.py), else from every path."""
    from ..classify.index import index_folder
    if os.path.isdir(index_folder(cache)):
        from ..classify.row_hashes import rows_of_paths
        return rows_of_paths(c, queries)
    row_of = {}
    for i, p in enumerate(c.paths):
        row_of.setdefault(p, i)  # an image's first row: its centre view
    return {q: row_of[q] for q in queries if q in row_of}


def _encoded(fingerprint, images, texts, layer, width, weights, device) -> np.ndarray:
    """The codes of image files the cache does not hold (its own extractor) and of phrases (an
    open_clip cache's text tower), in that order."""
    from ..classify.errors import ClassifyError
    encoded = np.zeros((0, width), dtype=np.float32)
    if images:
        from ..extract.by_fingerprint import encode_images
        paths, encoded, failures = encode_images(fingerprint, images, weights_file=weights, device=device,
                                                 layer=layer)
        if failures:
            path, reason = failures[0]
            raise ClassifyError(f"{path}: cannot be read as an image ({reason}); nothing searched")
        encoded = encoded[[paths.index(q) for q in images]]
    phrases = np.zeros((0, width), dtype=np.float32)
    if texts:
        if layer != "embedding":
            raise ClassifyError(f"text queries compare with an open_clip image embedding: layer {layer} is not one; "
                                "extract layer=embedding with an open_clip backbone")
        from ..extract.by_fingerprint import encode_texts
        phrases = encode_texts(fingerprint, texts, weights)
    return np.concatenate([encoded, phrases])


def _named(cache, queries, sources, layer, found, scores) -> list:
    """Each query's answer: its neighbours by row, named by path, label and split."""
    from ..cache import open_cache
    from ..cache.schema import UNLABELED
    with open_cache(cache) as c:
        answer_rows = sorted({int(r) for r in found.ravel() if r >= 0})
        paths = dict(zip(answer_rows, c.paths_of(np.array(answer_rows, dtype=np.int64))))
        labels, splits, class_names = c.labels, c.splits.astype(str), c.class_names
    out = []
    for query, row_list, score_list, source in zip(queries, found, scores, sources):
        neighbours = [{"row": int(r), "path": paths[int(r)],
                       "label": None if labels[r] == UNLABELED else class_names[int(labels[r])],
                       "split": str(splits[r]), "score": round(float(s), 6)}
                      for r, s in zip(row_list, score_list) if r >= 0]
        out.append({"query": query, "source": source, "layer": layer, "neighbours": neighbours})
    return out


def _recall(cache, layer, k, n, budget, exact, seed=0) -> dict:
    """The search's recall@k against the exact one, on ``n`` seeded sampled rows as queries."""
    from ..cache import open_cache
    from ..classify.index import nearest_in_cache
    with open_cache(cache) as c:
        rows = np.sort(np.random.default_rng(seed).choice(len(c), size=min(n, len(c)), replace=False))
        mask = np.zeros(len(c), dtype=bool)
        mask[rows] = True
        Q = c.codes(layer, rows=mask)
    found, _, _ = nearest_in_cache(cache, layer, Q, k, budget, rows, exact)
    truth, _, _ = nearest_in_cache(cache, layer, Q, k, budget, rows, exact=True)
    hits = [len(set(a[a >= 0].tolist()) & set(b[b >= 0].tolist())) / max(1, int((b >= 0).sum()))
            for a, b in zip(found, truth)]
    return {"queries": len(rows), "recall_at_k": round(float(np.mean(hits)), 4)}


def write_sheet(results, cache, path, size=128) -> str:
    """A picture sheet: one line per query, the query then its neighbours, each with its score."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..cache import open_cache
    from ..classify.report_html import thumbnail
    with open_cache(os.fspath(cache)) as c:
        root = c.fingerprint.provenance.get("data_root")
    columns = 1 + max(len(r["neighbours"]) for r in results)
    fig, axes = plt.subplots(len(results), columns, figsize=(1.6 * columns, 1.9 * len(results)), squeeze=False)
    for line, result in zip(axes, results):
        query = result["query"]
        cells = [(thumbnail(root, query, size) if result["source"] == "cache" else thumbnail("", query, size),
                  f"query\n{os.path.basename(query)[:18]}")]
        cells += [(thumbnail(root, n["path"], size), f"{n['score']:.3f} {n['label'] or ''}\n"
                   f"{os.path.basename(n['path'])[:18]}") for n in result["neighbours"]]
        for ax, (image, title) in zip(line, cells + [(None, "")] * (columns - len(cells))):
            ax.axis("off")
            if image is not None:
                ax.imshow(image)
            ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
