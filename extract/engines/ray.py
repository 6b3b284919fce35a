"""`--engine ray`: the same extract spread over a Ray cluster, in Ray Data's batch-inference shape.

The pending records become a Ray Dataset of batches (the local engine's batches, each named by
its first position in the run's list, so a batch's images and therefore its codes are the same). ``map_batches`` runs a stateful callable
class on a pool of actors; each builds the one Extractor from the fingerprint once and encodes
batches; a file that cannot be read or decoded comes back as a failure row, never a dropped
block. Ray retries the work of an actor that dies. The driver consumes the results in order and
commits shards through the same append API as the local engine, so the cache, resume and every
guard are the local engine's. Images must be readable by every node at the same path.
"""
import logging
import os
import socket

import numpy as np

from ..config import RunOptions
from ..errors import ExtractError

# Set by tests (and useful when debugging a cluster): each actor writes its pid into this folder.
PID_DIR_ENV = "CNNCODES_RAY_PID_DIR"
INSTALL_HINT = "engine=ray needs Ray: `pip install 'cnncodes[ray]'` (or `pip install 'ray[data]'`)"


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the extra installs both)
    except ImportError:
        raise ExtractError(INSTALL_HINT) from None
    return ray


def check_available() -> None:
    _import_ray()


START_HINT = ("start a head with `ray start --head` (it prints the address to pass), or leave out --ray-address "
              "to run a local Ray on this machine")
CONNECT_SECONDS = 5.0


def check_reachable(address) -> None:
    """A HOST:PORT that nothing answers on fails here in one line, within seconds: Ray itself retries
    an unreachable head without end, printing warnings."""
    if not address or address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ExtractError(f"ray_address={address}: expected auto or HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise ExtractError(f"ray_address={address}: cannot reach a Ray head there ({exc.strerror or exc}); "
                           f"{START_HINT}") from None


def _first_line(exc) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class RayEngine:
    """Shards → encoded batches on a Ray cluster (``address``: 'auto' or host:port; None starts
    a local Ray on this machine)."""

    name = "ray"

    def __init__(self, address=None):
        self.ray = _import_ray()
        self.address = address
        if not self.ray.is_initialized():
            check_reachable(address)
            try:
                self.ray.init(address=address, include_dashboard=False, log_to_driver=False,
                              logging_level=logging.WARNING, configure_logging=False)
            except ConnectionError as exc:  # "auto" with no cluster running here, among others
                raise ExtractError(f"ray_address={address}: no Ray cluster there ({_first_line(exc)}); {START_HINT}") from None
        context = self.ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # shards are committed in order
        context.enable_progress_bars = False              # the runner draws its own bar
        context.print_on_execution_start = False
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)

    def compute_device(self, requested: str) -> str:
        """Where the actors compute: CUDA when the cluster has GPUs (unless --device cpu)."""
        gpus = self.ray.cluster_resources().get("GPU", 0)
        if requested == "cpu" or (requested == "auto" and gpus < 1):
            return "cpu"
        if gpus < 1:
            raise ExtractError(f"device={requested}: the Ray cluster has no GPU; use device=cpu or auto")
        return "cuda"

    def prepare(self, extractor):
        """Nothing to build here: each actor builds its own network."""

    def _pool(self, device):
        """(actors, CPUs per actor, GPUs per actor, decoding workers per actor)."""
        resources = self.ray.cluster_resources()
        cpus = max(1, int(resources.get("CPU", 1)))
        if device == "cuda":
            actors = max(1, int(resources.get("GPU", 1)))
            per_actor = max(1, min(8, cpus // actors))
            return actors, per_actor, 1, per_actor - 1
        return cpus, 1, 0, 0  # one actor per core: each decodes and encodes its own batches

    def run(self, extractor, records):
        """EncodedBatch for each consecutive batch of ``records``, positions in ``records``, in order."""
        device = extractor.device.type
        actors, cpus, gpus, workers = self._pool(device)
        batch_size = extractor.batch_size
        items = [{"batch": {"start": start, "records": records[start:start + batch_size]}}
                 for start in range(0, len(records), batch_size)]
        if not items:
            return
        dataset = self.ray.data.from_items(items).map_batches(
            RayEncoder, batch_size=1, num_cpus=cpus, num_gpus=gpus,
            compute=self.ray.data.ActorPoolStrategy(size=min(actors, len(items))),
            fn_constructor_kwargs={"fingerprint": extractor.fingerprint.to_attrs(),
                                   "weights_file": extractor.weights_file,
                                   "options": RunOptions(device=device, batch_size=batch_size, workers=workers,
                                                         channels_last=extractor.options.channels_last,
                                                         max_pixels=extractor.options.max_pixels)})
        for row in dataset.iter_rows():
            yield row["result"]


class RayEncoder:
    """One per actor: builds the Extractor once, then encodes one batch of records per call."""

    def __init__(self, fingerprint, weights_file, options):
        from ..extractor import Extractor
        pid_dir = os.environ.get(PID_DIR_ENV)
        if pid_dir:
            open(os.path.join(pid_dir, str(os.getpid())), "w").close()
        self.extractor = Extractor.from_fingerprint(fingerprint, weights_file, options, keep_precision=True)

    def __call__(self, batch):
        out = []
        for item in batch["batch"]:
            encoded, = self.extractor.encode(item["records"])  # at most batch_size records: one batch
            out.append(encoded.shifted(item["start"]))
        return {"result": np.array(out, dtype=object)}

