"""`verify`: check a cache's structure, checksums, and optionally its photos and codes."""
import os


def verify(cache, *, images=False, recompute=0, data=None, weights=None, device="auto", min_cosine=None):
    """Check a cache: its structure, counts and every code chunk's checksum; with ``images`` also
    re-hash the photos still present; with ``recompute`` N, re-extract N random rows and compare
    (worst cosine at least ``min_cosine``). Returns the VerifyReport (.ok, .problems, .changed,
    .to_dict(): `verify --json`)."""
    import functools

    from ..cache.verify import verify_cache
    from ..extract import options
    from ..extract.sources import source_hasher
    cache = os.fspath(cache)
    check = None
    if recompute:
        from ..extract.by_fingerprint import recompute_rows
        check = functools.partial(recompute_rows, cache, recompute, data_root=data, weights_file=weights,
                                  device=device)
    return verify_cache(cache, images=images, data_root=data, recompute=check, source_hasher=source_hasher,
                        min_cosine=options.RECOMPUTE_MIN_COSINE if min_cosine is None else min_cosine)
