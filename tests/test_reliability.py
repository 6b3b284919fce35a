"""Trying to break the cache: many kills, SIGTERM, a full disk, a read-only location, corrupted bytes."""
import contextlib
import errno
import os
import random
import signal
import subprocess
import time

import h5py
import pytest

from cnncodes.cache import open_cache
from cnncodes.cache._manifest import segment_folder
from cnncodes.cache.verify import verify_cache
from conftest import assert_same_cache as assert_same, committed_rows, make_folder, make_image, run_cli, start_cli

# A small network: each of the many process starts here builds it (VGG16 took 2.2 s more per start).
ARGS = ["--backbone", "mobilenet_v3_small", "--weights", "random", "--crop-size", "32", "--no-progress", "--workers", "0", "--batch-size", "4",
        "--dtype", "float32"]
KILLS = 20


def read_all(cache):
    with open_cache(cache) as c:
        return {"paths": c.paths, "codes": c.codes()}


def start(data, cache, *extra):
    return start_cli("extract", data, "--cache", cache, *ARGS, *extra)


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data"
    make_folder(str(folder), per_class=14)
    (folder / "red" / "zero.jpg").write_bytes(b"")
    return folder


@pytest.mark.slow
def test_twenty_kills_at_random_moments_then_the_clean_result(tmp_path):
    data = tmp_path / "data"
    make_folder(str(data), per_class=40)
    (data / "red" / "zero.jpg").write_bytes(b"")
    total = 121
    args = [*ARGS, "--shard-rows", "4", "--crop-size", "64"]
    clean = tmp_path / "clean.h5"
    proc = start(data, clean, "--shard-rows", "4", "--crop-size", "64")
    started = time.perf_counter()  # once it runs (the first start also brings up tests/forked_cli.py's server)
    while proc.poll() is None and committed_rows(clean) == 0:
        time.sleep(0.005)
    first_commit = time.perf_counter() - started  # start-up: scan, model build, first shard (imports too when not forked)
    assert proc.wait() == 0
    killed = tmp_path / "killed.h5"
    rng = random.Random(20261129)
    mid_run = 0
    for _ in range(KILLS):
        proc = start(data, killed, "--shard-rows", "4", "--crop-size", "64")
        if rng.random() < 0.3:  # any moment of start-up and the first commit
            time.sleep(rng.uniform(0.0, first_commit))
        else:  # a few rows after the last kill's: mid-loop, during a commit or a merge
            target = committed_rows(killed) + rng.randint(1, 4)
            deadline = time.time() + 120
            while proc.poll() is None and committed_rows(killed) < target and time.time() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        mid_run += proc.returncode == -signal.SIGKILL and 0 < committed_rows(killed) < total
    print(f"{KILLS} kills, {mid_run} landed after some rows and before the last were committed")
    run_cli("extract", data, "--cache", killed, *args)
    assert_same(clean, killed)
    assert verify_cache(killed).ok
    assert len(set(read_all(killed)["paths"])) == total - 1  # no duplicate rows
    assert mid_run >= 5, f"only {mid_run} of {KILLS} kills landed while rows were being committed"


def test_sigterm_commits_what_is_complete_and_exits_143(data, tmp_path):
    cache = tmp_path / "c.h5"
    proc = start(data, cache, "--shard-rows", "4", "--crop-size", "64")
    deadline = time.time() + 120
    while time.time() < deadline and committed_rows(cache) < 8:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate()
    assert proc.returncode == 143, err
    assert "interrupted; re-run the same command to resume" in out and "Traceback" not in err
    assert committed_rows(cache) >= 8
    run_cli("extract", data, "--cache", cache, *ARGS, "--shard-rows", "4", "--crop-size", "64")
    run_cli("extract", data, "--cache", tmp_path / "clean.h5", *ARGS, "--shard-rows", "4", "--crop-size", "64")
    assert_same(tmp_path / "clean.h5", cache)


@contextlib.contextmanager
def small_disk(path, size):
    """A tmpfs of ``size`` at path (root only); yields a function that resizes it."""
    os.makedirs(path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield lambda new: subprocess.run(["mount", "-o", f"remount,size={new}", str(path)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def can_mount():
    return os.geteuid() == 0 and subprocess.run(["which", "mount"], capture_output=True).returncode == 0


@pytest.mark.skipif(not can_mount(), reason="mounting a small tmpfs needs root; the next test injects ENOSPC instead")
def test_full_disk_stops_in_one_line_and_resumes_after_space_is_freed(tmp_path):
    data = tmp_path / "data"
    make_folder(str(data), per_class=30)
    run_cli("extract", data, "--cache", tmp_path / "clean.h5", *ARGS, "--shard-rows", "8")
    with small_disk(tmp_path / "disk", "900k") as resize:
        cache = tmp_path / "disk" / "c.h5"
        out = run_cli("extract", data, "--cache", cache, *ARGS, "--shard-rows", "8", check=False)
        assert out.returncode == 2, out.stderr
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "the disk is full" in lines[0] and str(cache) in lines[0], out.stderr
        assert "MB free" in lines[0] and "Traceback" not in out.stderr
        committed = read_all(cache)["paths"]  # what was committed before stays readable
        assert 0 < len(committed) < 90
        resize("64m")
        run_cli("extract", data, "--cache", cache, *ARGS, "--shard-rows", "8")
        assert_same(tmp_path / "clean.h5", cache)
        assert verify_cache(cache).ok


@pytest.mark.parametrize("background", [True, False])
def test_no_shard_is_written_after_a_failed_one(background):
    """Once a shard's write fails, no later shard is written, not even those a session's close
    commits after the error was raised: a committed shard after an uncommitted one would leave a
    gap that the re-run fills at the end, so the resumed cache would not equal a clean run's (seen:
    a full disk, then a write that fitted in the space the failed one freed)."""
    from cnncodes.cache._writer_thread import OrderedWriter
    done = []

    def write(job):
        if job == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        done.append(job)
    writer = OrderedWriter(write, background)
    with pytest.raises(OSError):
        for job in range(1, 6):
            writer.submit(job)
        writer.close()
        writer.raise_pending()
    for job in (6, 7):  # what the session's close hands over after the error
        writer.submit(job)
    writer.close()
    writer.raise_pending()
    assert done == [1]


def test_injected_enospc_is_one_clear_error_and_loses_nothing(tmp_path, monkeypatch):
    from cnncodes.cache import DiskFull
    from cnncodes.cache import append as append_module
    from cnncodes.extract import ExtractConfig, run_extract
    data = tmp_path / "data"
    make_folder(str(data), per_class=8)
    settings = dict(weights="random", crop_size=32, workers=0, batch_size=4, progress=False, dtype="float32",
                    shard_rows=4)
    run_extract(ExtractConfig(str(data), str(tmp_path / "clean.h5"), **settings))
    real_write, calls = append_module.write_segment, []

    def fills_up(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(*args, **kwargs)
    monkeypatch.setattr(append_module, "write_segment", fills_up)
    cache = tmp_path / "c.h5"
    with pytest.raises(DiskFull, match="the disk is full"):
        run_extract(ExtractConfig(str(data), str(cache), **settings))
    assert len(open_cache(cache)) > 0
    monkeypatch.setattr(append_module, "write_segment", real_write)
    run_extract(ExtractConfig(str(data), str(cache), **settings))
    assert_same(tmp_path / "clean.h5", cache)


def test_unwritable_cache_location_fails_before_any_work(tmp_path, image_folder):
    place = tmp_path / "ro"
    if can_mount():
        os.makedirs(place)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(place)], check=True)
    else:
        os.makedirs(place)
        os.chmod(place, 0o500)
    try:
        started = time.perf_counter()
        out = run_cli("extract", image_folder, "--cache", place / "c.h5", *ARGS, check=False)
        assert out.returncode == 2 and "cannot write the cache there" in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
        assert time.perf_counter() - started < 60
    finally:
        if can_mount():
            subprocess.run(["umount", "-l", str(place)], check=False)


def flip_code_byte(cache):
    """Change one byte inside the first code chunk of the first segment, as a failing disk might."""
    folder = segment_folder(str(cache))
    name = sorted(n for n in os.listdir(folder) if n.endswith(".h5"))[0]
    path = os.path.join(folder, name)
    with h5py.File(path, "r") as f:
        layer = list(f["codes"])[0]
        info = f["codes"][layer].id.get_chunk_info(0)
    with open(path, "r+b") as raw:
        raw.seek(info.byte_offset + info.size // 2)
        byte = raw.read(1)
        raw.seek(info.byte_offset + info.size // 2)
        raw.write(bytes([byte[0] ^ 0x5A]))


def test_verify_catches_corruption_changed_and_missing_images(image_folder, tmp_path):
    cache = tmp_path / "c.h5"
    run_cli("extract", image_folder, "--cache", cache, *ARGS, "--backbone", "vgg16")  # bf16 recomputes to 0.999
    ok = run_cli("verify", cache, "--images", "--recompute", "4")
    assert "18 re-hashed, 0 changed, 0 missing" in ok.stdout and ok.stdout.strip().endswith("ok")
    worst = float(ok.stdout.split("worst cosine to the stored codes ")[1].split()[0])
    assert worst > 0.999

    make_image(str(image_folder / "red" / "0000.jpg"), seed=4242)
    os.remove(image_folder / "blue" / "0001.jpg")
    out = run_cli("verify", cache, "--images", check=False)
    assert out.returncode == 1
    assert "changed: red/0000.jpg" in out.stdout and "missing: blue/0001.jpg" in out.stdout

    flip_code_byte(cache)
    out = run_cli("verify", cache, check=False)
    assert out.returncode == 1 and "checksum" in out.stdout
    fit = run_cli("fit", cache, "--classifier", "centroid", check=False)
    assert fit.returncode == 2 and "cannot be read" in fit.stderr and "Traceback" not in fit.stderr


def test_truncated_cache_is_a_clear_error(image_folder, tmp_path):
    cache = tmp_path / "c.h5"
    run_cli("extract", image_folder, "--cache", cache, *ARGS)
    with open(cache, "r+b") as f:
        f.truncate(os.path.getsize(cache) // 2)
    # info and fit refuse the input (2, one line); verify reports a problem (1, its report)
    for command, code in ((("info", cache), 2), (("fit", cache), 2), (("verify", cache), 1)):
        out = run_cli(*command, check=False)
        assert out.returncode == code and "Traceback" not in out.stderr, (command, out.stderr)
        assert code == 1 or (len(out.stderr.strip().splitlines()) == 1 and str(cache) in out.stderr and (
            "not a readable HDF5 cache" in out.stderr or "the cache file is damaged" in out.stderr))
    assert "truncated" in run_cli("verify", cache, check=False).stdout
