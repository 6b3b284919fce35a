"""Stage one numbers records one way: by their place in the run's pending list. Engines yield
batches in that numbering; the runner commits every --shard-rows records of whole batches."""
from types import SimpleNamespace

import numpy as np

from cnncodes.extract.encoder import EncodedBatch
from cnncodes.extract.runner import ExtractConfig, ExtractSummary, _encode_and_commit
from cnncodes.extract.sources import Record


class Session:
    def __init__(self):
        self.rows, self.commits = [], []

    def add_rows(self, paths, keys, splits, classes, stats, codes, views=None):
        self.rows += paths

    def add_failures(self, paths, keys, reasons, stats):
        self.rows += [f"failed:{p}" for p in paths]

    def carry_rows(self, paths, stats):
        self.rows += [f"carried:{p}" for p in paths]

    def commit_shard(self):
        self.commits.append(len(self.rows))


class Engine:
    """Batches of ``size`` records, each encoded as a worker does: positions from 0, then shifted."""

    def __init__(self, size):
        self.size = size

    def run(self, extractor, records):
        for start in range(0, len(records), self.size):
            n = min(self.size, len(records) - start)
            local = EncodedBatch(indices=list(range(n - 1)), codes={"fc7": np.zeros((n - 1, 2), np.float32)},
                                 failed=[(n - 1, "not an image")], keys={i: f"k{start + i}" for i in range(n)},
                                 read_ns={i: 0 for i in range(n)}, start=0, count=n)
            yield local.shifted(start)


def test_batches_carry_run_positions_and_commits_fall_every_shard_rows():
    records = [Record(path=f"a/{i}.jpg", abspath=f"/d/a/{i}.jpg", label="a", split="train", stat=(1, 0, i))
               for i in range(10)]
    session = Session()
    config = ExtractConfig("/d", "/c.h5", shard_rows=8, progress=False)
    _encode_and_commit(Engine(4), SimpleNamespace(batch_size=4), session, records, config, ExtractSummary("/c.h5"))
    # batch [0, 4): rows 0-2, failure 3; [4, 8): rows 4-6, failure 7; [8, 10): row 8, failure 9
    assert session.rows == ["a/0.jpg", "a/1.jpg", "a/2.jpg", "failed:a/3.jpg", "a/4.jpg", "a/5.jpg", "a/6.jpg",
                            "failed:a/7.jpg", "a/8.jpg", "failed:a/9.jpg"]
    assert session.commits == [8, 10]  # after 8 records (two whole batches), and at the end


def test_shifted_moves_every_position_once():
    batch = EncodedBatch(indices=[0, 2], codes={}, failed=[(1, "broken")], keys={0: "a", 1: "b", 2: "c"},
                         unchanged=[3], read_ns={0: 5, 1: 6, 2: 7, 3: 8}, start=0, count=4)
    batch.shifted(40)
    assert (batch.indices, batch.failed, batch.unchanged, batch.start, batch.count) == ([40, 42], [(41, "broken")],
                                                                                         [43], 40, 4)
    assert batch.keys == {40: "a", 41: "b", 42: "c"} and batch.read_ns == {40: 5, 41: 6, 42: 7, 43: 8}
