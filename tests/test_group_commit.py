"""Group commit (cache/_writer_thread.py, cache/append.py): shards that wait while the writer is
busy join into one segment. Made deterministic here by holding the writer on its first shard: the
order of jobs, what may join (never carried rows, a path twice, past the byte bound, the end), a
failure that drops the joined rest, the cache equal to one written a segment a shard, and a kill
during the joined segment's write leaving the committed prefix (or, once its rename is done, the
whole joined job after recovery)."""
import os
import signal
import threading

import numpy as np
import pytest

from cnncodes.cache import Fingerprint, open_cache, open_for_append
from cnncodes.cache import append as append_module
from cnncodes.cache._writer_thread import OrderedWriter
from cnncodes.cache.append import AppendSession, recover
from cnncodes.cache.verify import verify_cache
from conftest import assert_same_cache

FP = Fingerprint(backbone="toy", layers=("f",), weights="random:0", preprocess={"crop": 8}, dtype="float16")
WIDTHS = {"f": 4}


def _held_writer(calls):
    """do(job) for an OrderedWriter whose first job waits until released; returns (do, started, release)."""
    started, release = threading.Event(), threading.Event()

    def do(job):
        if not calls:
            started.set()
            assert release.wait(30)
        calls.append(job)
        if "fail" in job:
            raise OSError("the disk is gone")
    return do, started, release


def _joining(waiting, job):
    """Jobs are lists; one holding "alone" never joins the job before it (later ones may join it)."""
    return None if "alone" in job else waiting + job


def _writing_a(calls):
    """(an OrderedWriter joining jobs by _joining, busy with job ["a"] until the event is set, the event)."""
    do, started, release = _held_writer(calls)
    writer = OrderedWriter(do, background=True, combine=_joining)
    writer.submit(["a"])
    assert started.wait(30)  # "a" is being written: the next jobs wait
    return writer, release


def test_jobs_waiting_join_in_order_and_one_that_may_not_join_waits_behind():
    calls = []
    writer, release = _writing_a(calls)
    for job in (["b"], ["c"], ["alone"], ["d"], ["e"]):
        writer.submit(job)
    release.set()
    writer.close()
    writer.raise_pending()
    assert calls == [["a"], ["b", "c"], ["alone", "d", "e"]]


def test_a_third_job_that_may_not_join_waits_for_room():
    """Two jobs waiting and a third that may not join them: the caller waits (memory stays bounded)."""
    calls = []
    writer, release = _writing_a(calls)
    writer.submit(["b"])
    writer.submit(["alone"])
    returned = threading.Event()
    caller = threading.Thread(target=lambda: (writer.submit(["alone", "too"]), returned.set()))
    caller.start()
    assert not returned.wait(0.5)
    release.set()
    assert returned.wait(30)
    caller.join()
    writer.close()
    assert calls == [["a"], ["b"], ["alone"], ["alone", "too"]]


def test_a_failed_job_drops_the_jobs_joined_after_it():
    calls = []
    writer, release = _writing_a(calls)
    writer.submit(["fail"])
    writer.submit(["alone"])  # waits behind the failing job
    writer.submit(["b"])      # joins "alone"
    release.set()
    writer.close()
    with pytest.raises(OSError, match="the disk is gone"):
        writer.raise_pending()
    assert calls == [["a"], ["fail"]]


def _rows(first, n):
    paths = [f"a/{first + i:04d}.jpg" for i in range(n)]
    return (paths, [f"{first + i:064x}" for i in range(n)], ["train"] * n, ["a"] * n,
            [(10 + first + i, 10 ** 18 + first + i, 7) for i in range(n)],
            {"f": np.arange(first * 4, (first + n) * 4, dtype=np.float32).reshape(n, 4) / 7})


def _shards(session, shards):
    for kind, first, n in shards:
        if kind == "rows":
            session.add_rows(*_rows(first, n))
        elif kind == "again":  # the same path as row ``first``, new bytes: it replaces that row
            paths, keys, splits, classes, stats, codes = _rows(first, n)
            session.add_rows(paths, [k.replace("0", "f", 1) for k in keys], splits, classes, stats,
                             {"f": codes["f"] + 1})
        elif kind == "failure":
            session.add_failures([f"a/bad{first}.jpg"], [f"{first:064x}"], ["not an image"], [(1, 2, 3)])
        session.commit_shard()


SHARDS = [("rows", 0, 3), ("rows", 3, 2), ("failure", 90, 0), ("rows", 5, 4), ("again", 3, 1), ("rows", 9, 2)]


class _HeldWriter:
    """Sessions' writers, the first job after each start() held until ``release`` is set; ``jobs``:
    each written job's shard count."""

    def __init__(self, monkeypatch):
        self.jobs = []
        self.start()
        real = AppendSession._write_and_link

        def write_and_link(session, job):
            self.jobs.append(job.shards)
            if self._hold:
                self._hold = False
                self.started.set()
                assert self.release.wait(30)
            return real(session, job)
        monkeypatch.setattr(AppendSession, "_write_and_link", write_and_link)

    def start(self):
        self.jobs.clear()
        self.started, self.release, self._hold = threading.Event(), threading.Event(), True


def test_shards_that_wait_join_and_the_cache_equals_a_segment_a_shard(tmp_path, monkeypatch):
    reference = str(tmp_path / "reference.h5")
    with open_for_append(reference, FP, WIDTHS, ["a"], background=False) as session:
        _shards(session, SHARDS)
    held = _HeldWriter(monkeypatch)
    cache = str(tmp_path / "c.h5")
    with open_for_append(cache, FP, WIDTHS, ["a"]) as session:
        _shards(session, SHARDS[:1])
        assert held.started.wait(30)
        _shards(session, SHARDS[1:])
        held.release.set()
    # the first alone (being written); the next three joined; the row written again waits behind
    # them (its path is in the joined job) and takes the last one with it
    assert held.jobs == [1, 3, 2]
    assert_same_cache(reference, cache)
    assert verify_cache(cache).ok


def test_carried_rows_and_the_byte_bound_never_join(tmp_path, monkeypatch):
    cache = str(tmp_path / "c.h5")
    with open_for_append(cache, FP, WIDTHS, ["a"], background=False) as session:
        _shards(session, [("rows", 0, 4)])
    held = _HeldWriter(monkeypatch)
    with open_for_append(cache, FP, WIDTHS, ["a"]) as session:
        _shards(session, [("rows", 10, 1)])
        assert held.started.wait(30)
        _shards(session, [("rows", 11, 2)])
        session.carry_rows(["a/0000.jpg"], [(99, 99, 99)])  # a touched file: its row carried, read when written
        session.commit_shard()
        held.release.set()
    assert held.jobs == [1, 1, 1]
    monkeypatch.setattr(append_module, "JOINED_MAX_BYTES", 4 * 4 * 2)  # four rows of 4 float16 codes
    held.start()
    with open_for_append(cache, FP, WIDTHS, ["a"]) as session:
        _shards(session, [("rows", 20, 1)])
        assert held.started.wait(30)
        _shards(session, [("rows", 21, 2), ("rows", 23, 2), ("rows", 25, 2)])  # 2 + 2 fit, 2 more do not
        held.release.set()
    assert held.jobs == [1, 2, 1]
    with open_cache(cache) as c:
        assert c.paths == [f"a/{i:04d}.jpg" for i in (1, 2, 3, 10, 11, 12, 0, 20, 21, 22, 23, 24, 25, 26)]
    assert verify_cache(cache).ok


def _killed_during_joined_write(cache, after_rename):
    """In a forked child: shard 1 held in the writer while shards 2 and 3 join; the child SIGKILLs
    itself at the joined segment's rename (before it, or just after it)."""
    pid = os.fork()
    if pid == 0:
        try:
            real_replace, renames = os.replace, []

            def replace(source, target):
                name = os.path.basename(os.fspath(target))
                if name.startswith("seg-"):
                    renames.append(name)
                    if len(renames) == 2 and not after_rename:
                        os.kill(os.getpid(), signal.SIGKILL)
                real_replace(source, target)
                if name.startswith("seg-") and len(renames) == 2 and after_rename:
                    os.kill(os.getpid(), signal.SIGKILL)
            os.replace = replace
            real, held = AppendSession._write_and_link, threading.Event()
            release = threading.Event()

            def write_and_link(session, job):
                if not held.is_set():
                    held.set()
                    release.wait(30)
                return real(session, job)
            AppendSession._write_and_link = write_and_link
            with open_for_append(cache, FP, WIDTHS, ["a"]) as session:
                _shards(session, [("rows", 0, 2)])
                held.wait(30)
                _shards(session, [("rows", 2, 2), ("rows", 4, 2)])
                release.set()
        finally:
            os._exit(3)  # never reached when the kill came
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.parametrize("after_rename, rows", [(False, 2), (True, 6)])
def test_a_kill_during_a_joined_write_keeps_the_committed_prefix(tmp_path, after_rename, rows):
    cache = str(tmp_path / "c.h5")
    assert _killed_during_joined_write(cache, after_rename)
    recover(cache)  # what the next run does first: a renamed segment is committed, a partial file is not
    with open_cache(cache) as c:
        assert c.paths == [f"a/{i:04d}.jpg" for i in range(rows)]
    assert verify_cache(cache).ok


def _job(first, n, failures=0):
    from cnncodes.cache._segments import SegmentRows
    paths, keys, splits, classes, stats, codes = _rows(first, n)
    rows = SegmentRows(paths=paths, keys=keys, splits=splits, classes=classes, stats=stats, views=[0] * n,
                       codes={"f": [codes["f"].astype(np.float16)]} if n else {})
    rows.failed_paths = [f"a/bad{first + i}.jpg" for i in range(failures)]
    rows.failed_keys, rows.failed_reasons = ["0" * 64] * failures, ["not an image"] * failures
    rows.failed_stats = [(1, 2, 3)] * failures
    return append_module._Job([rows])


def test_a_join_changes_neither_job_so_a_signal_in_its_middle_loses_nothing_waiting():
    """Ctrl-C or SIGTERM (a Python exception at any bytecode) may come while a shard joins the one
    waiting: the waiting job must stay whole, as the join builds a new job and the writer swaps it in."""
    waiting, job = _job(0, 3, failures=1), _job(3, 2)
    joined = append_module._Job.joined(waiting, job)
    assert waiting.shards == 1 and len(waiting.parts[0].paths) == 3 and len(waiting.parts[0].failed_paths) == 1
    assert job.shards == 1 and len(job.parts[0].paths) == 2
    assert joined.shards == 2 and joined.code_bytes == waiting.code_bytes + job.code_bytes
    rows = joined.rows  # made on the writer's thread
    assert rows.paths == [f"a/{i:04d}.jpg" for i in range(5)] and rows.failed_paths == ["a/bad0.jpg"]
    assert np.concatenate(rows.codes["f"]).shape == (5, 4)


def test_no_joins_at_a_bound_of_zero_not_even_of_shards_of_failures_alone(monkeypatch):
    monkeypatch.setattr(append_module, "JOINED_MAX_BYTES", 0)
    assert append_module._Job.joined(_job(0, 0, failures=1), _job(10, 0, failures=1)) is None
    assert append_module._Job.joined(_job(0, 2), _job(10, 2)) is None


def test_an_extract_whose_writer_falls_behind_joins_shards_and_equals_a_clean_run(tmp_path, monkeypatch):
    """The real loop: extract's shards handed over while the writer is held on its first."""
    from cnncodes.extract import ExtractConfig, run_extract
    from conftest import make_folder
    data = tmp_path / "data"
    make_folder(str(data), per_class=8)
    settings = dict(weights="random", crop_size=32, workers=0, batch_size=2, progress=False, shard_rows=2)
    run_extract(ExtractConfig(str(data), str(tmp_path / "clean.h5"), **settings))
    real, jobs, handed = AppendSession._write_and_link, [], threading.Semaphore(0)
    real_commit = AppendSession.commit_shard

    def commit_shard(session):
        real_commit(session)
        handed.release()

    def held_first(session, job):
        jobs.append(job.shards)
        if len(jobs) == 1:  # the first shard's write outlasts the loop's next three hand-overs
            for _ in range(4):
                assert handed.acquire(timeout=30)
        return real(session, job)
    monkeypatch.setattr(AppendSession, "commit_shard", commit_shard)
    monkeypatch.setattr(AppendSession, "_write_and_link", held_first)
    run_extract(ExtractConfig(str(data), str(tmp_path / "c.h5"), **settings))
    assert sum(jobs) == 12 and max(jobs) > 1, jobs  # 24 photos in 2-row shards, some written together
    assert_same_cache(tmp_path / "clean.h5", tmp_path / "c.h5")
    assert verify_cache(str(tmp_path / "c.h5")).ok
