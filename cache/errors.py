class CacheError(Exception):
    """A cache file that cannot be used as asked; the message names the file and the fix."""


class CacheLocked(CacheError):
    """Another process holds the cache's write lock."""


class FingerprintMismatch(CacheError):
    """New codes would come from a different extractor than the cache's existing rows."""


class DiskFull(CacheError):
    """Writing failed for lack of space or quota; what was committed before stays readable."""
