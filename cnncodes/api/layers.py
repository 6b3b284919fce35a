"""What ``layer=`` means when a verb reads a cache: one meaning for None everywhere (every code
layer the cache holds, side by side: what load_codes reads and fit trains on), and the named
default "first" (the cache's first layer: what the audit's threshold is calibrated on and what
similar searches)."""
import os

FIRST = "first"  # the cache's first layer


def reading_layer(cache, layer):
    """``layer`` as the stage rooms read it: None stays None (every code layer); "first" is the
    cache's first layer; a name, "a,b", "a+b" or a sequence becomes the stored name "a+b"."""
    if layer is None:
        return None
    if layer == FIRST:
        from ..cache import open_cache
        with open_cache(os.fspath(cache)) as c:
            return c.first_layer
    from ..extract.config import layer_names
    return "+".join(layer_names(layer))
