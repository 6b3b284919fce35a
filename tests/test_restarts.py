"""A scheduler's way of stopping a job: `kill -9` of the main pid only (its decoding workers or
Ray processes live on), then the same command again at once. No restart may be refused, the
orphaned workers must be killed at once (and be gone soon after), and the finished cache must
equal an uninterrupted run's."""
import os
import random
import signal
import time
from dataclasses import dataclass

import pytest

from conftest import assert_same_cache, committed_rows, make_folder, run_cli, start_cli

# A small network: each of the many process starts here builds it (VGG16 took 2.2 s more per start).
ARGS = ["--backbone", "mobilenet_v3_small", "--weights", "random", "--crop-size", "64", "--no-progress", "--batch-size", "4", "--shard-rows", "4",
        "--dtype", "float32"]
REFUSED = "another extract is writing"


def stat_fields(pid):
    """The fields of /proc/``pid``/stat after the command name (state first), or None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def children_of(pid):
    """Pids whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(entry)
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid):
    """Running (a zombie left for a parent that does not reap it counts as gone)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


PF_EXITING = 0x4  # include/linux/sched.h: the task is in do_exit
SIGKILL_BIT = 1 << (signal.SIGKILL - 1)


def doomed(pid):
    """Gone, exiting, or with a SIGKILL pending: it will run no more of its own code.

    Dying takes CPU time in the dying process (unmapping its memory), and a decoding worker runs
    at the idle priority: on cores kept busy by the restart and by other tests, one with a SIGKILL
    pending measured 13 s from the kill to the zombie (400 MB, three busy processes on 2 cores).
    What the parent-death signal promises is the kill itself, at once; ``alive`` checks the exit."""
    fields = stat_fields(pid)
    if fields is None:
        return True
    try:
        with open(f"/proc/{pid}/status") as f:
            pending = [int(line.split()[1], 16) for line in f if line.startswith(("SigPnd:", "ShdPnd:"))]
    except OSError:
        return True
    return fields[0] in "ZX" or int(fields[6]) & PF_EXITING or any(p & SIGKILL_BIT for p in pending)


@dataclass
class Campaign:
    refused: list    # the stderr of each restart refused as "another extract is writing"
    orphans: list    # pids of the decoding workers alive when their parent was killed
    lingering: int   # of them, neither gone nor killed ``settle`` seconds later (see ``doomed``)
    outlived: list   # per kill that left workers: seconds until the last was doomed (at most ``settle``)
    last: object     # the last restart, run to its end
    rows_at_kill: list  # rows each killed run had committed
    last_out: str = ""  # the last restart's stdout
    unreaped: int = 0   # orphans still alive ``reap_within`` s after the last restart ended


def kill_and_restart(cache, command, kills, seed, settle, rows_step=8, delay=0.2, startup_share=0.0, reap_within=0):
    """Kill the main pid of ``command`` (pipeline.py arguments writing ``cache``) at random moments,
    starting it again the moment it is dead. A kill lands ``startup_share`` of the time at any moment
    of the first 3 s, otherwise up to ``delay`` s after 1..``rows_step`` more rows were committed.
    With ``reap_within``, waits up to that many seconds after the last run for every orphan to exit."""
    rng = random.Random(seed)
    campaign = Campaign([], [], 0, [], None, [])
    proc = start_cli(*command)
    for _ in range(kills):
        if startup_share and rng.random() < startup_share:  # imports, model build, first batches
            time.sleep(rng.uniform(0.0, 3.0))
        else:  # mid-loop: during decoding, a commit or a merge
            target, deadline = committed_rows(cache) + rng.randint(1, rows_step), time.time() + 120
            while proc.poll() is None and committed_rows(cache) < target and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, delay))
        workers = children_of(proc.pid)
        proc.send_signal(signal.SIGKILL)  # the main pid only, not its process group
        proc.wait()  # not communicate(): orphaned workers keep the pipes open while they live
        # what the killed run had committed, read once it is dead (read before the signal, a commit
        # landing in between went uncounted), a few milliseconds before the restart
        campaign.rows_at_kill.append(committed_rows(cache))
        dead, proc, died = proc, start_cli(*command), time.time()  # at once
        while time.time() < died + settle and not all(doomed(p) for p in workers):
            time.sleep(0.01)
        campaign.orphans += workers
        campaign.lingering += sum(not doomed(p) for p in workers)
        if workers:
            campaign.outlived.append(time.time() - died)
        _, err = dead.communicate()
        if dead.returncode == 2 and REFUSED in err:
            campaign.refused.append(err.strip())
    campaign.last_out, err = proc.communicate()
    if proc.returncode == 2 and REFUSED in err:
        campaign.refused.append(err.strip())
    campaign.last = proc
    deadline = time.time() + reap_within
    while time.time() < deadline and any(alive(p) for p in campaign.orphans):
        time.sleep(0.05)
    campaign.unreaped = sum(alive(p) for p in campaign.orphans)
    return campaign


@pytest.mark.slow
def test_kill_main_pid_while_workers_decode_restart_at_once(tmp_path):
    data = tmp_path / "data"
    make_folder(str(data), per_class=100)  # the small network commits fast: enough rows for every kill to land mid-run
    (data / "red" / "zero.jpg").write_bytes(b"")
    extra = ("--workers", "2")
    run_cli("extract", data, "--cache", tmp_path / "clean.h5", *ARGS, *extra)
    killed = tmp_path / "killed.h5"
    run = kill_and_restart(killed, ["extract", data, "--cache", killed, *ARGS, *extra], kills=8, seed=20261201,
                           settle=1.5, reap_within=60)
    assert not run.refused, f"{len(run.refused)} restarts refused; first: {run.refused[0]}"
    assert run.last.returncode == 0
    assert len(run.outlived) >= 4, f"only {len(run.outlived)} kills found decoding workers alive"
    assert run.lingering == 0, f"{run.lingering} orphaned decoding workers not killed 1.5 s after their parent"
    assert run.unreaped == 0, f"{run.unreaped} orphaned decoding workers still alive a minute after the last run"
    assert_same_cache(tmp_path / "clean.h5", killed)


@pytest.mark.ray
def test_kill_ray_driver_restart_at_once(tmp_path, monkeypatch):
    """The driver of a local Ray killed twice mid-run: each restart resumes (it skips the committed
    rows and writes the rest) to the uninterrupted local engine's cache."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")
    import torch
    data = tmp_path / "data"
    make_folder(str(data), per_class=24)
    # The clean run on one torch thread, as each Ray actor computes (Ray sets OMP_NUM_THREADS=1 in its
    # workers): fp32 kernels may sum in an order that depends on the thread count (seen under the AVX2
    # caps: the last bits of most codes), and this test is about restarts, not thread counts.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same where run_cli starts a process (CNNCODES_TEST_SUBPROCESS=1)
    try:
        run_cli("extract", data, "--cache", tmp_path / "clean.h5", *ARGS)
    finally:
        torch.set_num_threads(threads)
    killed = tmp_path / "killed.h5"
    # delay: the kill within 20 ms of its target row: a restart writes its few dozen rows fast enough
    # that 0.2 s later it had sometimes finished, and the kill found nothing to interrupt
    run = kill_and_restart(killed, ["extract", data, "--cache", killed, *ARGS, "--engine", "ray"], kills=2, seed=7,
                           settle=0, delay=0.02)
    assert not run.refused, f"{len(run.refused)} restarts refused; first: {run.refused[0]}"
    assert run.last.returncode == 0
    assert all(0 < rows < 72 for rows in run.rows_at_kill), f"not every kill landed mid-run: {run.rows_at_kill}"
    assert "skipped" in run.last_out and "wrote 0," not in run.last_out, run.last_out
    assert_same_cache(tmp_path / "clean.h5", killed)


def test_second_writer_fails_before_weights_scan_or_calibration(tmp_path):
    """The lock comes first: with the cache held, an int8 run with weights and a data folder that
    do not exist is refused for the lock, not for the weights or the folder (it looked at neither),
    and well before the 34-40 s an int8 calibration takes."""
    from cnncodes.cache import cache_lock
    cache = tmp_path / "c.h5"
    with cache_lock(str(cache)):
        started = time.perf_counter()
        out = run_cli("extract", tmp_path / "no-such-folder", "--cache", cache, "--precision", "int8",
                      "--weights", tmp_path / "no-such-weights.pth", "--no-progress", check=False)
        seconds = time.perf_counter() - started
    assert out.returncode == 2 and REFUSED in out.stderr, out.stderr
    assert f"pid {os.getpid()}" in out.stderr  # the live holder
    assert len(out.stderr.strip().splitlines()) == 1
    assert seconds < 30, f"refused only after {seconds:.1f} s"
