"""Where the encoding runs. The unit of work is a shard: consecutive pending records, whole
batches, committed together. An engine maps shards to encoded batches; the driver (runner.py)
commits them through the cache's append API, so every engine gives the same cache."""
from dataclasses import dataclass

from .errors import ExtractError


@dataclass
class Shard:
    index: int
    records: list   # Record objects, in commit order


@dataclass
class ShardProgress:
    """One encoded batch of a shard; ``done`` on the shard's last batch."""
    shard: Shard
    batch: object   # EncodedBatch, positions relative to shard.records
    done: bool


def make_shards(records, shard_records: int) -> list:
    return [Shard(i, records[start:start + shard_records])
            for i, start in enumerate(range(0, len(records), shard_records))]


def track_shards(shards, encoded):
    """ShardProgress for each (shard index, EncodedBatch in shard positions) an engine produced,
    in order; ``done`` once a shard's every record came back. Shared by every engine."""
    by_index = {shard.index: shard for shard in shards}
    consumed = dict.fromkeys(by_index, 0)
    for index, batch in encoded:
        consumed[index] += len(batch)
        yield ShardProgress(by_index[index], batch, consumed[index] == len(by_index[index].records))


class LocalEngine:
    """This process: one DataLoader over every pending record (decoding never stalls between
    shards). Shards hold whole batches, so no batch straddles two shards."""

    name = "local"

    def compute_device(self, requested: str):
        return None  # this machine's own choice (extract/device.py)

    def run(self, extractor, shards):
        return track_shards(shards, self._encoded(extractor, shards))

    @staticmethod
    def _encoded(extractor, shards):
        records = [r for shard in shards for r in shard.records]
        owner, offset = [], []  # per record: its shard; per shard: its first record's position
        for shard in shards:
            offset.append(len(owner))
            owner += [shard.index] * len(shard.records)
        for batch in extractor.encode(records):
            positions = batch.indices + [i for i, _ in batch.failed] + batch.unchanged
            if positions:
                index = owner[positions[0]]
                shift_positions(batch, -offset[index])
                yield index, batch


def shift_positions(batch, delta):
    """Move an EncodedBatch's record positions by ``delta`` (between shard and run numbering)."""
    batch.indices = [i + delta for i in batch.indices]
    batch.failed = [(i + delta, reason) for i, reason in batch.failed]
    batch.unchanged = [i + delta for i in batch.unchanged]
    batch.keys = {i + delta: key for i, key in batch.keys.items()}
    batch.read_ns = {i + delta: ns for i, ns in batch.read_ns.items()}


ENGINE_NAMES = ("local", "ray")


def make_engine(name, ray_address=None):
    """The engine by name; Ray is imported only when asked for (an optional extra)."""
    if name == "local":
        return LocalEngine()
    if name == "ray":
        from .ray_engine import RayEngine
        return RayEngine(ray_address)
    raise ExtractError(f"--engine {name}: choose {' or '.join(ENGINE_NAMES)}")
