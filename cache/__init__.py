"""The HDF5 cache of CNN codes: the contract between extract (stage one) and classify (stage two).

Only h5py and numpy live here; this package imports neither stage.
"""
from .errors import CacheError, CacheLocked, FingerprintMismatch
from .reader import CodesCache, open_cache
from .schema import SCHEMA_VERSION, COMPARED_FINGERPRINT_KEYS
from .store import (CacheWriter, cache_lock, check_fingerprint, existing_fingerprint, recover_shards,
                    read_done_index)

__all__ = [
    "CacheError", "CacheLocked", "FingerprintMismatch", "CodesCache", "open_cache",
    "SCHEMA_VERSION", "COMPARED_FINGERPRINT_KEYS", "CacheWriter", "cache_lock", "check_fingerprint",
    "existing_fingerprint", "recover_shards", "read_done_index",
]
