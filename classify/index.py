"""A cache's faiss index, kept in step with the cache: the cosine engine's (classify/cosine.py) fast
path for a cache of many rows. faiss (faiss-cpu) is the optional extra ``index``: without it no
index is built and every search is the exact one, as before.

Stored beside the cache, in the folder ``CACHE.faiss/``, per layer:
- ``LAYER.json``, the manifest: the kind, its search parameters, the files below, and the cache
  version the row map was made against (the cache file's inode, mtime and size: every commit
  renames a new file into place). Written last, to a temporary name renamed into place: it is the
  commit point, so a kill during a build leaves the previous index whole (the next build removes
  files no manifest names);
- ``LAYER.G.faiss``: the faiss index of generation G (ids 0..n-1 in the order rows were added);
- ``LAYER.G.ids.npy``: each id's identity, a 64-bit hash of (path, content key, view) of its row;
- ``LAYER.G.rows.npy``: each id's row in the recorded cache version, -1 where the row is gone;
- ``LAYER.S.vectors.npy`` (IVF-PQ only): the unit codes as float16, appended a segment per update,
  read through a memory map to rank the compressed index's candidates exactly.

In step: a search on another cache version maps ids to rows again by identity (pruned or replaced
rows drop out, a relabel changes nothing held) and searches the rows the index lacks (committed
after it) exactly, merging both; `cnncodes index CACHE` again adds only the new rows.

Kinds, by size (``kind=`` chooses): flat (exact, up to FLAT_ROWS), hnsw (up to HNSW_ROWS, whose float32
vectors fit FLOAT_BYTES), ivf (inverted lists of float32 vectors, up to FLOAT_BYTES), ivfpq (product-
quantised lists, for what does not fit: a few dozen bytes a row, candidates ranked exactly).
"""
import json
import os
import time

import numpy as np

from .cosine import cache_blocks, ranked, top_k, unit
from .errors import ClassifyError
from .row_hashes import SEARCH_FOLDER, forget_unnamed, row_hashes

KINDS = ("flat", "hnsw", "ivf", "ivfpq")
FLAT_ROWS = 20_000
HNSW_ROWS = 200_000
FLOAT_BYTES = 1 << 30       # float32 vectors an index loaded by every search may hold: beyond, ivfpq
HNSW_LINKS = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 128
TRAIN_PER_LIST = 40         # rows sampled per inverted list to train on
TRAIN_ITERATIONS = 10
NPROBE_IVF = 24
NPROBE_PQ = 48
PQ_SUBVECTOR = 16           # dimensions per product-quantiser byte
REFINE = 20                 # ivfpq: candidates ranked exactly per answer wanted (at least REFINE_MIN)
REFINE_MIN = 200
PQ_CENTROIDS = 256          # a product quantiser's centroids per byte (8 bits)
PQ_TRAIN_ROWS = PQ_CENTROIDS * 40  # which want 39 rows each at least
INSTALL = "`pip install 'cnncodes[index]'` (faiss-cpu)"
FORMAT = 1
# Rows given to faiss's add at a time: an IVF add assigns its rows to lists with a [rows, lists]
# matrix of distances and a residual copy of the rows (a million-row load would ask ~10 GB more),
# and a PQ encodes them through a float32 table of [rows, 256 centroids, subquantizers] (faiss's
# ProductQuantizer::compute_codes, for 16 dimensions a byte or more): 2.7 GB for 32,768 rows of
# 1280 dimensions, the index build's peak at 5,000,000 rows. So the rows are those whose table
# fits ADD_TABLE_BYTES, ADD_ROWS at most.
ADD_ROWS = 32768
ADD_TABLE_BYTES = 128 << 20
BUILD_TRIES = 3          # a build that saw a commit to the cache starts again, this many times at most


def faiss_module():
    """faiss, or None when the optional extra is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def index_folder(cache_path) -> str:
    return os.fspath(cache_path) + SEARCH_FOLDER


def cache_version(cache_path) -> list:
    """The cache file's identity: every commit renames a new file into place."""
    s = os.stat(cache_path)
    return [int(s.st_ino), int(s.st_mtime_ns), int(s.st_size)]


def _cache_identities(cache_path) -> tuple:
    """(each row's identity, rows): from the hashes kept per segment file (classify/row_hashes.py)."""
    ids, _ = row_hashes(cache_path)
    return ids, len(ids)


def _rows_of(ids_hash, current) -> np.ndarray:
    """For each indexed identity, the row of the cache that holds it now, or -1: both sides sorted,
    so the lookups walk memory in order (a million random lookups would each miss the cache)."""
    out = np.full(len(ids_hash), -1, dtype=np.int64)
    if not len(current) or not len(ids_hash):
        return out
    order = np.argsort(current)
    held = current[order]
    asked = np.argsort(ids_hash)
    wanted = ids_hash[asked]
    at = np.minimum(np.searchsorted(held, wanted), len(held) - 1)
    hit = held[at] == wanted
    out[asked[hit]] = order[at[hit]]
    return out


def choose_kind(n, width) -> str:
    if n <= FLAT_ROWS:
        return "flat"
    if n <= HNSW_ROWS and n * width * 4 <= FLOAT_BYTES:
        return "hnsw"
    return "ivf" if n * width * 4 <= FLOAT_BYTES else "ivfpq"


def _lists(n) -> int:
    return int(max(16, min(65536, round(np.sqrt(n)))))


def _pq_bytes(width) -> int:
    m = max(1, width // PQ_SUBVECTOR)
    while width % m:
        m -= 1
    return m


def _new_index(faiss, kind, width, n):
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexFlatIP(width), {}
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(width, HNSW_LINKS, ip)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return index, {"ef_search": HNSW_EF_SEARCH}
    quantizer = faiss.IndexFlatIP(width)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, width, _lists(n), ip)
        params = {"nprobe": NPROBE_IVF}
    else:
        index = faiss.IndexIVFPQ(quantizer, width, _lists(n), _pq_bytes(width), 8, ip)
        index.pq.cp.niter = TRAIN_ITERATIONS
        params = {"nprobe": NPROBE_PQ, "refine": REFINE}
    index.cp.niter = TRAIN_ITERATIONS
    return index, params


def _apply(index, kind, params, faiss):
    if kind == "hnsw":
        index.hnsw.efSearch = params["ef_search"]
    elif kind in ("ivf", "ivfpq"):
        faiss.extract_index_ivf(index).nprobe = params["nprobe"]


def _add_rows(index, faiss) -> int:
    """Rows to give faiss's add at a time: ADD_ROWS, fewer where a product quantiser encodes them
    (its table of distances, 4 bytes for each row, centroid and subquantizer, within ADD_TABLE_BYTES)."""
    try:
        pq = getattr(faiss.downcast_index(faiss.extract_index_ivf(index)), "pq", None)
    except RuntimeError:  # not an IVF index
        pq = None
    if pq is None:
        return ADD_ROWS
    return int(max(256, min(ADD_ROWS, ADD_TABLE_BYTES // (4 * pq.ksub * pq.M))))


def _training_rows(cache_path, layer, n, lists, seed=0) -> np.ndarray:
    """Unit rows to train the lists on: whole chunks of rows from seeded random places (a chunk reads
    as one), TRAIN_PER_LIST per list."""
    from ..cache.schema import CODE_CHUNK_ROWS
    from ..cache import open_cache
    want = min(n, max(lists * TRAIN_PER_LIST, PQ_TRAIN_ROWS))
    chunks = -(-n // CODE_CHUNK_ROWS)
    pick = np.random.default_rng(seed).choice(chunks, size=min(chunks, -(-want // CODE_CHUNK_ROWS)), replace=False)
    mask = np.zeros(n, dtype=bool)
    for chunk in pick:
        mask[chunk * CODE_CHUNK_ROWS:(chunk + 1) * CODE_CHUNK_ROWS] = True
    with open_cache(cache_path) as c:
        return unit(c.codes(layer, rows=mask))


def _write(folder, name, write):
    """Write a file under a temporary name and rename it into place."""
    path = os.path.join(folder, name)
    temporary = f"{path}.{os.getpid()}.tmp"
    write(temporary)
    os.replace(temporary, path)
    return name


def _save_npy(array):
    def write(path):
        with open(path, "wb") as f:
            np.save(f, array)
    return write


def _commit(folder, layer, manifest):
    """The manifest renamed into place (the commit point), then files no manifest names removed."""
    _write(folder, f"{layer}.json", lambda path: json.dump(manifest, open(path, "w"), indent=1))
    keep = {f"{layer}.json", manifest["faiss"], manifest["ids"], manifest["rows"], *manifest["vectors"]}
    for name in os.listdir(folder):
        if name.startswith(f"{layer}.") and name not in keep:
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass


def read_manifest(cache_path, layer):
    path = os.path.join(index_folder(cache_path), f"{layer}.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if manifest.get("format") == FORMAT and manifest.get("layer") == layer else None


def build(cache_path, layer, kind=None, rebuild=False, budget_bytes=1 << 30, on_step=None, _tries=BUILD_TRIES) -> dict:
    """Build the cache's index for ``layer``, or bring it up to date (only the rows it lacks are
    added). Returns {kind, rows, added, gone, rebuilt, seconds, folder}. A commit to the cache during
    the build (its rows may have moved under the codes read) makes it start again, up to BUILD_TRIES times."""
    faiss = faiss_module()
    if faiss is None:
        raise ClassifyError(f"{cache_path}: an index needs faiss, which is not installed; install it with {INSTALL}")
    if kind is not None and kind not in KINDS:
        raise ClassifyError(f"kind={kind!r}: choose {', '.join(KINDS)}, or None to choose by size")
    started = time.perf_counter()
    cache_path = os.fspath(cache_path)
    folder = index_folder(cache_path)
    os.makedirs(folder, exist_ok=True)
    version = cache_version(cache_path)
    from ..cache import open_cache
    with open_cache(cache_path) as c:
        current, _ = row_hashes(c)
        n, width, runs = len(current), c.width(layer), c.row_runs()
    old = None if rebuild else read_manifest(cache_path, layer)
    wanted = kind or choose_kind(n, width)
    if old is not None and (old["kind"] != wanted or old["dim"] != width) and (
            kind is not None or n > 2 * old["built_rows"] or old["dim"] != width):
        old = None  # another kind asked for, or grown past twice its size: built again
    least = {"ivf": _lists(0), "ivfpq": max(_lists(0), PQ_CENTROIDS)}.get(wanted, 0)
    if old is None and n < least:  # faiss's training would stop with an assertion of its own
        raise ClassifyError(f"{cache_path}: an {wanted} index trains on at least {least:,} rows and the cache has "
                            f"{n:,}; choose kind=flat or kind=hnsw, or build it once more photos are extracted")
    generation = (old["generation"] + 1) if old else int(time.time() * 1000)
    if old is not None:
        index = faiss.read_index(os.path.join(folder, old["faiss"]))
        ids_hash = np.load(os.path.join(folder, old["ids"]))
        wanted, params, vectors = old["kind"], old["params"], list(old["vectors"])
    else:
        index, params = _new_index(faiss, wanted, width, n)
        ids_hash, vectors = np.zeros(0, dtype=np.uint64), []
        if wanted in ("ivf", "ivfpq"):
            if on_step:
                on_step(f"training {wanted} on a sample")
            index.train(_training_rows(cache_path, layer, n, faiss.extract_index_ivf(index).nlist))
    rows_of = _rows_of(ids_hash, current)  # the one join of what the index holds with the cache's rows
    new = np.ones(n, dtype=bool)
    new[rows_of[rows_of >= 0]] = False
    added = int(new.sum())
    if added:
        if on_step:
            on_step(f"adding {added:,} rows")
        store = None
        if wanted == "ivfpq":  # written block by block with plain writes: a memory map would keep every
            name = f"{layer}.{generation}.vectors.npy"  # page written resident, the whole file at the end
            store = open(os.path.join(folder, name + ".tmp"), "wb")
            np.lib.format.write_array_header_1_0(store, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
                                                         "fortran_order": False, "shape": (added, width)})
        new_rows = np.flatnonzero(new)
        step = _add_rows(index, faiss)
        try:
            for rows, codes in cache_blocks(cache_path, layer, budget_bytes, new):
                for start in range(0, len(codes), step):
                    U = codes[start:start + step]
                    unit(U, out=U)
                    index.add(U)
                    if store is not None:
                        store.write(U.astype(np.float16).tobytes())
        finally:
            if store is not None:
                store.close()
        if store is not None:
            os.replace(os.path.join(folder, name + ".tmp"), os.path.join(folder, name))
            vectors.append(name)
        ids_hash = np.concatenate([ids_hash, current[new_rows]])
        rows_of = np.concatenate([rows_of, new_rows])
    faiss_name = old["faiss"] if (old is not None and not added) else _write(
        folder, f"{layer}.{generation}.faiss", lambda path: faiss.write_index(index, path))
    ids_name = old["ids"] if (old is not None and not added) else _write(
        folder, f"{layer}.{generation}.ids.npy", _save_npy(ids_hash))
    rows_name = _write(folder, f"{layer}.{generation}.rows.npy", _save_npy(rows_of))
    manifest = {"format": FORMAT, "layer": layer, "kind": wanted, "dim": width, "params": params,
                "generation": generation, "faiss": faiss_name, "ids": ids_name, "rows": rows_name,
                "vectors": vectors, "ntotal": int(index.ntotal), "cache_version": version, "cache_rows": n,
                "built_rows": old["built_rows"] if old else n, "faiss_version": faiss.__version__}
    if cache_version(cache_path) != version:  # rows read from two versions of the cache: again
        if _tries <= 1:
            raise ClassifyError(f"{cache_path}: the cache changed during each of {BUILD_TRIES} index builds (a writer "
                                "committing); run `cnncodes index` again once it has finished")
        return build(cache_path, layer, kind, rebuild, budget_bytes, on_step, _tries - 1)
    _commit(folder, layer, manifest)
    forget_unnamed(cache_path, runs)
    return {"kind": wanted, "rows": n, "indexed": int((rows_of >= 0).sum()), "added": added,
            "gone": int((rows_of < 0).sum()), "rebuilt": old is None, "seconds": time.perf_counter() - started,
            "folder": folder}


def _prefetch(vectors, rows) -> None:
    """Ask the kernel for the pages of some rows of a memory-mapped store at once (posix_fadvise's
    WILLNEED, where the OS has it): a query's candidates lie at random places of a store larger than
    the page cache keeps, and the map would read them a page fault at a time. 200 random rows of the
    5,000,000-row store: 43.9 ms median read one by one, 6.5 ms asked for first (docs/benchmarks.md)."""
    if not hasattr(os, "posix_fadvise") or not len(rows):
        return
    rows = np.unique(rows)
    starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)  # runs of adjacent rows: one call each
    stops = np.append(starts[1:], len(rows))
    row_bytes = vectors.shape[1] * vectors.itemsize
    try:  # a hint only: a store a rebuild has since removed is still read through its map
        fd = os.open(vectors.filename, os.O_RDONLY)
    except OSError:
        return
    try:
        for first, count in zip(rows[starts].tolist(), (stops - starts).tolist()):
            os.posix_fadvise(fd, vectors.offset + first * row_bytes, count * row_bytes, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


class CacheIndex:
    """A loaded index of one layer of a cache: ``search`` is top_k over every row of the cache."""

    def __init__(self, cache_path, manifest, faiss):
        self.cache_path, self.manifest, self.faiss = cache_path, manifest, faiss
        folder = index_folder(cache_path)
        self.kind, self.layer = manifest["kind"], manifest["layer"]
        self.index = faiss.read_index(os.path.join(folder, manifest["faiss"]))
        _apply(self.index, self.kind, manifest["params"], faiss)
        self.rows_of = np.load(os.path.join(folder, manifest["rows"]))
        self.vectors = [np.load(os.path.join(folder, name), mmap_mode="r") for name in manifest["vectors"]]
        self.starts = np.cumsum([0] + [len(v) for v in self.vectors])
        self._version = manifest["cache_version"]
        self.unindexed = None  # mask of cache rows the index lacks (None: none)

    def _in_step(self):
        """Map ids to the cache's current rows when the cache changed since the map was made."""
        version = cache_version(self.cache_path)
        if version == self._version:
            return
        ids_hash = np.load(os.path.join(index_folder(self.cache_path), self.manifest["ids"]))
        current, n = _cache_identities(self.cache_path)
        self.rows_of = _rows_of(ids_hash, current)
        lacking = np.ones(n, dtype=bool)
        lacking[self.rows_of[self.rows_of >= 0]] = False
        self.unindexed = lacking if lacking.any() else None
        self._version = version

    def _stored(self, ids) -> np.ndarray:
        """The stored unit vectors (float32) of some ids."""
        segment = np.searchsorted(self.starts, ids, side="right") - 1
        out = np.empty((len(ids), self.index.d), dtype=np.float32)
        for s in np.unique(segment):
            mine = segment == s
            rows = ids[mine] - self.starts[s]
            _prefetch(self.vectors[s], rows)
            out[mine] = self.vectors[s][rows]
        return out

    def search(self, queries, k, exclude=None, budget_bytes=1 << 30) -> tuple:
        """(rows [q, k], cosines [q, k]) as cosine.top_k gives them, from the index (and exactly from
        the rows committed after it)."""
        self._in_step()
        Q = unit(queries)
        q = len(Q)
        exclude = np.full(q, -1, dtype=np.int64) if exclude is None else np.asarray(exclude, dtype=np.int64)
        gone = int((self.rows_of < 0).sum())
        refine = self.kind == "ivfpq"
        want = k + 1 + gone if not refine else max(k * self.manifest["params"]["refine"], REFINE_MIN) + 1 + gone
        want = int(min(want, self.index.ntotal))
        best_rows = np.full((q, k), -1, dtype=np.int64)
        best = np.full((q, k), -np.inf, dtype=np.float32)
        if want and q:
            scores, ids = self.index.search(Q, want)
            found = ids >= 0
            rows = np.where(found, self.rows_of[np.maximum(ids, 0)], -1)
            if refine:
                flat = np.flatnonzero(found & (rows >= 0))
                exact = np.full(ids.shape, -np.inf, dtype=np.float32)
                V = self._stored(ids.ravel()[flat])
                exact.ravel()[flat] = np.einsum("ij,ij->i", V, Q[flat // want])
                scores = exact
            scores = np.where((rows >= 0) & (rows != exclude[:, None]), scores, -np.inf).astype(np.float32)
            best_rows, best = ranked(rows, scores)
            best_rows, best = best_rows[:, :k], best[:, :k]
            if best.shape[1] < k:
                pad = k - best.shape[1]
                best_rows = np.hstack([best_rows, np.full((q, pad), -1, dtype=np.int64)])
                best = np.hstack([best, np.full((q, pad), -np.inf, dtype=np.float32)])
        if self.unindexed is not None:  # rows committed after the index: exactly
            more_rows, more = top_k(Q, cache_blocks(self.cache_path, self.layer, budget_bytes, self.unindexed), k,
                                    exclude)
            best_rows, best = ranked(np.hstack([best_rows, more_rows]), np.hstack([best, more]))
            best_rows, best = best_rows[:, :k], best[:, :k]
        return best_rows, best


def indexed_layers(cache_path) -> list:
    """The layers of a cache that have an index (a manifest in CACHE.faiss/)."""
    folder = index_folder(cache_path)
    if not os.path.isdir(folder):
        return []
    return sorted(name[:-len(".json")] for name in os.listdir(folder)
                  if name.endswith(".json") and read_manifest(cache_path, name[:-len(".json")]) is not None)


def open_index(cache_path, layer):
    """The cache's index of ``layer`` when it has one and faiss is installed, else None."""
    if not isinstance(layer, str):
        return None
    manifest = read_manifest(os.fspath(cache_path), layer)
    if manifest is None:
        return None
    faiss = faiss_module()
    if faiss is None:
        return None
    return CacheIndex(os.fspath(cache_path), manifest, faiss)


def nearest_in_cache(cache_path, layer, queries, k, budget_bytes, exclude=None, exact=False) -> tuple:
    """top_k over every row of a cache's ``layer``: through its faiss index when it has one for that
    layer (and faiss is installed), else (or with ``exact``) the exact streamed search. Returns
    (rows, cosines, how) with how "exact" or the index's kind."""
    if not exact:
        index = open_index(cache_path, layer)
        if index is not None:
            rows, scores = index.search(queries, k, exclude=exclude, budget_bytes=budget_bytes)
            return rows, scores, index.kind
    rows, scores = top_k(queries, cache_blocks(cache_path, layer, budget_bytes), k, exclude)
    return rows, scores, "exact"
