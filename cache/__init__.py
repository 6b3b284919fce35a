"""The HDF5 cache of CNN codes: the contract between extract (stage one) and classify (stage two).

Only h5py and numpy live here; this package imports neither stage (tests/test_import_rules.py).
The face: the readers' API (open_cache, CodesCache, Fingerprint, the errors) and the writer's entry
points (open_for_append, cache_lock, existing_fingerprint, untrusted_stat). The write protocol's
internals are the `_` modules (segments, manifest, compaction, row index, writer thread, ...).
"""
from ._lock import cache_lock
from ._racy import untrusted_stat
from .append import KEEP_LABEL, AppendSession, existing_fingerprint, open_for_append
from .errors import CacheError, CacheLocked, DiskFull, FingerprintMismatch
from .fingerprint import COMPARED_FINGERPRINT_KEYS, Fingerprint
from .reader import CodesCache, open_cache
from .schema import SCHEMA_VERSION

__all__ = [
    "CodesCache", "open_cache", "Fingerprint", "COMPARED_FINGERPRINT_KEYS", "SCHEMA_VERSION",
    "CacheError", "CacheLocked", "DiskFull", "FingerprintMismatch",
    "open_for_append", "AppendSession", "KEEP_LABEL", "cache_lock", "existing_fingerprint", "untrusted_stat",
]
