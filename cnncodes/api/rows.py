"""Which row of a cache holds a photo on disk, whatever path a writer gave it: what a process
reads of each version of a cache once (CacheIndex), for CodesTransformer and similar. No
scikit-learn and no torch here: a one-query `similar` process imports neither for it."""
import os

import numpy as np

_KEYS = {}  # (absolute path, stat) -> SHA-256 of its bytes: each photo is hashed once per process


def cached_rows_for(cache, paths) -> dict:
    """{absolute path: the cache path whose row holds its codes} for the photos the cache already
    has, whatever path a writer first gave them: the same path; the path relative to the data
    folder extract was given, when its stat is unchanged; else a row with the same content key (the
    SHA-256 of the bytes). Changed and unknown photos are left out: extract reads those."""
    index = cache_index(cache)
    return index.rows_for(paths) if index is not None else {}


class CacheIndex:
    """What a transform needs of one version of a cache, read once per process: the fingerprint,
    each centre row's path, stat and content key, the failures, and the default code layers.
    Kept per cache path and replaced when the file is (every commit renames a new one into place)."""

    def __init__(self, cache):
        from ..cache import open_cache
        from ..classify.data import all_code_layers
        from ..extract.sources import paths_folder
        with open_cache(cache) as c:
            self.generation = cache_generation(cache)  # after the open: equal to one before it, this is that version
            centre = c.views == 0
            self.n_rows = len(c)
            cached = [p for p, keep in zip(c.paths, centre) if keep]
            keys = [k for k, keep in zip(c.keys, centre) if keep]
            try:
                stats = [tuple(int(v) for v in s) for s in c.raw("stat")[()][centre]]
            except KeyError:  # a schema-1 cache keeps no stat: its photos are found by content alone
                stats = [None] * len(cached)
            self.fingerprint = c.fingerprint
            self.code_layers = all_code_layers(c.layers, c.fingerprint)
            self.failures = dict(c.failures)
            self.row_of = dict(zip(cached, np.flatnonzero(centre).tolist()))
            self.root = paths_folder(c.fingerprint.provenance.get("data_root"))
        self.stat_of, self.key_of = dict(zip(cached, stats)), dict(zip(cached, keys))
        self.codes = {}  # layer -> this version's codes, held by CodesTransformer where small (its HELD_BYTES)
        self.by_key = {}
        for path, key in zip(cached, keys):
            self.by_key.setdefault(key, path)

    def rows_for(self, paths) -> dict:
        """cached_rows_for, against this version."""
        from ..extract.sources import read_and_hash
        from ..extract.sources.records import Record, file_stat
        found = {}
        root = self.root if self.root and "://" not in self.root else None
        for path in paths:
            try:
                stat = file_stat(os.stat(path))
            except OSError:
                continue  # extract records why
            if self.stat_of.get(path) == stat:
                found[path] = path
                continue
            relative = os.path.relpath(path, root).replace(os.sep, "/") if root else None
            if relative is not None and self.stat_of.get(relative) == stat:
                found[path] = relative
                continue
            key = _KEYS.get((path, stat))
            if key is None:
                key = _KEYS[(path, stat)] = read_and_hash(Record(path=path, abspath=path, label=None))[1]
            if key in self.by_key:
                found[path] = path if self.key_of.get(path) == key else self.by_key[key]
        return found


_INDEXES = {}  # real path of a cache -> its CacheIndex (the latest version read)


def cache_generation(cache):
    """Which version of the cache file is on disk: a commit renames a new file into place."""
    st = os.stat(cache)
    return st.st_ino, st.st_mtime_ns, st.st_size


def cache_index(cache):
    """The CacheIndex of the cache's current version (None: no cache yet), read at most once a version."""
    key = os.path.realpath(cache)
    while True:
        try:
            before = cache_generation(cache)
        except FileNotFoundError:
            return None
        index = _INDEXES.get(key)
        if index is not None and index.generation == before:
            return index
        index = CacheIndex(cache)
        if index.generation == before:  # no commit between the stat and the open
            _INDEXES[key] = index
            return index
