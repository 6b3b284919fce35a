"""The HDF5 cache of CNN codes: the contract between extract (stage one) and classify (stage two).

Only h5py and numpy live here; this package imports neither stage.
"""
from .append import AppendSession, Known, existing_fingerprint, open_for_append, recover
from .errors import CacheError, CacheLocked, DiskFull, FingerprintMismatch
from .fingerprint import COMPARED_FINGERPRINT_KEYS, Fingerprint
from .lock import cache_lock, check_writable
from .manifest import segment_folder
from .racy import smudged
from .reader import CodesCache, open_cache
from .schema import SCHEMA_VERSION

__all__ = [
    "AppendSession", "Known", "existing_fingerprint", "open_for_append", "recover", "CacheError", "CacheLocked",
    "DiskFull", "check_writable",
    "FingerprintMismatch", "COMPARED_FINGERPRINT_KEYS", "Fingerprint", "cache_lock", "segment_folder",
    "CodesCache", "open_cache", "SCHEMA_VERSION", "smudged",
]
