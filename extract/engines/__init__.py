"""Where the encoding runs. An engine takes the run's pending records (the one numbering of a
run) and yields EncodedBatch objects in order, whole batches of the extractor's batch size, with
positions in that list; the runner commits them through the cache's append API, so every engine
gives the same cache. Distributors over one worker, as in clip-retrieval: ``local`` (this process:
one DataLoader) and ``ray`` (a Ray cluster, imported only when asked for: an optional extra)."""
from ..errors import ExtractError
from ..options import ENGINE_NAMES


def make_engine(name, ray_address=None):
    """The engine by name."""
    if name == "local":
        from .local import LocalEngine
        return LocalEngine()
    if name == "ray":
        from .ray import RayEngine
        return RayEngine(ray_address)
    raise ExtractError(f"engine={name}: choose {' or '.join(ENGINE_NAMES)}")
