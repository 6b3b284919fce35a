"""64-bit hashes naming a cache's rows, kept per segment file so that each new version of the cache
costs work in proportion to its new rows, not to all of them.

- a row's identity: a hash of its path, content key and view (what the faiss index records of each
  row it holds: classify/index.py);
- a row's path hash: a hash of its path alone (what finds a query path's row without reading every
  path of the cache).

A segment file never changes once written (cache/reader.py ``row_runs``), so the hashes of its rows
are computed once and kept in ``CACHE.faiss/rows/CONTENT.hashes`` (a BLAKE2b digest, then uint64
[rows, 2]), named by what the segment holds; a cache version's hashes are those files sliced by its
row runs. Written under a temporary name and renamed, by whoever needs them first; a file that is
unreadable, short or does not match its digest is computed again; one nothing names any more is
removed by the next `cnncodes index`.
A packed cache (no segments) is hashed whole each time.
"""
import hashlib
import os

import numpy as np

SEARCH_FOLDER = ".faiss"  # CACHE.faiss/: the index (classify/index.py) and these hashes
MEMO_FOLDER = "rows"
MEMO_SUFFIX = ".hashes"  # a BLAKE2b digest of the rest, then uint64 little-endian [rows, 2]
DIGEST_BYTES = 32
VIEW_MIX = np.uint64(0x9E3779B97F4A7C15)


def identities(paths, keys, views) -> np.ndarray:
    """A 64-bit identity per row: a hash of its path, content key and view (uint64 [n])."""
    out = np.fromiter((int.from_bytes(hashlib.blake2b(f"{p}\0{k}".encode(), digest_size=8).digest(), "little")
                       for p, k in zip(paths, keys)), dtype=np.uint64, count=len(paths))
    return out ^ (np.asarray(views, dtype=np.uint64) * VIEW_MIX)


def path_hashes(paths) -> np.ndarray:
    """A 64-bit hash of each path (uint64 [n])."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(p.encode("utf-8", "surrogateescape"), digest_size=8,
                                                       person=b"path").digest(), "little") for p in paths),
                       dtype=np.uint64, count=len(paths))


def memo_folder(cache_path) -> str:
    return os.fspath(cache_path) + SEARCH_FOLDER + os.sep + MEMO_FOLDER


def row_hashes(cache, memo=True) -> tuple:
    """(identities [n], path hashes [n]) of every row of a cache (a path, or a CodesCache open: its
    reader registration keeps the segment files it names), in row order. ``memo``: keep and reuse
    each segment's hashes in CACHE.faiss/rows/ (else compute every row's)."""
    from ..cache import open_cache
    if isinstance(cache, (str, os.PathLike)):
        with open_cache(cache) as c:
            return row_hashes(c, memo)
    from ..cache.reader import segment_row_names
    runs = cache.row_runs()
    if runs is None or not memo:
        paths = cache.paths
        return identities(paths, cache.keys, cache.views), path_hashes(paths)
    folder = memo_folder(cache.path)
    held = {}
    for run in runs:
        if run.content not in held:
            held[run.content] = _segment_hashes(folder, run, segment_row_names)
    parts = [held[run.content][run.start:run.stop] for run in runs]
    both = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.uint64)
    return np.ascontiguousarray(both[:, 0]), np.ascontiguousarray(both[:, 1])


def _segment_hashes(folder, run, read_names) -> np.ndarray:
    memo = os.path.join(folder, f"{run.content}{MEMO_SUFFIX}")
    stored = _read_memo(memo)
    if stored is not None and len(stored) >= run.stop:
        return stored
    paths, keys, views = read_names(run.file)
    hashes = np.stack([identities(paths, keys, views), path_hashes(paths)], axis=1)
    body = np.ascontiguousarray(hashes, dtype="<u8").tobytes()
    try:
        os.makedirs(folder, exist_ok=True)
        temporary = f"{memo}.{os.getpid()}.tmp"
        with open(temporary, "wb") as f:
            f.write(hashlib.blake2b(body, digest_size=DIGEST_BYTES).digest() + body)
        os.replace(temporary, memo)
    except OSError:
        pass  # a folder not writable here: computed again next time, nothing wrong
    return hashes


def _read_memo(memo):
    """A kept segment's hashes [rows, 2], or None where the file is missing, short or damaged (its
    digest does not match): a damaged memo must never hide a row from a lookup."""
    try:
        with open(memo, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    digest, body = raw[:DIGEST_BYTES], raw[DIGEST_BYTES:]
    if len(body) % 16 or hashlib.blake2b(body, digest_size=DIGEST_BYTES).digest() != digest:
        return None
    return np.frombuffer(body, dtype="<u8").reshape(-1, 2).astype(np.uint64)


def forget_unnamed(cache_path, runs) -> None:
    """Remove kept hashes of segments the cache's ``runs`` (CodesCache.row_runs) no longer name
    (merged away, pruned)."""
    folder = memo_folder(cache_path)
    if not os.path.isdir(folder):
        return
    named = {f"{run.content}{MEMO_SUFFIX}" for run in runs or ()}
    for name in os.listdir(folder):
        if name not in named:
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass


def rows_of_paths(c, paths) -> dict:
    """{path: row} for the paths an open cache ``c`` holds (an image's centre view where it has
    several), by path hash then checked against the stored path; paths it does not hold are left out."""
    _, hashes = row_hashes(c)
    found = {}
    for path, h in zip(paths, path_hashes(paths)):
        candidates = np.flatnonzero(hashes == h)
        stored = c.paths_of(candidates)
        rows = [int(r) for r, p in zip(candidates, stored) if p == path]
        if rows:
            centre = [r for r in rows if int(c.views[r]) == 0]
            found[path] = (centre or rows)[0]
    return found
