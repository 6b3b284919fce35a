"""--engine ray on a local Ray: the same cache as the local engine, and robust to a dying worker (its
killed driver resumes: tests/test_restarts.py)."""
import os
import signal
import sys
import time

import pytest

from conftest import assert_same_cache as same_cache, committed_rows, make_folder, run_cli, start_cli

# A small network: each of the many process starts here builds it (VGG16 took 2.2 s more per start).
ARGS = ["--backbone", "mobilenet_v3_small", "--weights", "random", "--crop-size", "32", "--no-progress", "--batch-size", "4", "--shard-rows", "8"]


@pytest.fixture
def ray_available():
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")


@pytest.fixture
def folder(tmp_path):
    data = tmp_path / "data"
    make_folder(str(data), per_class=12)
    (data / "red" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return data


@pytest.mark.ray
def test_ray_engine_gives_the_local_engines_cache(ray_available, folder, tmp_path):
    """The same rows as the local engine, in the same order, bit for bit: augmented views too (each
    image's views right after its centre row), a broken image recorded as a failure; a re-run
    skips everything."""
    run_cli("extract", folder, "--cache", tmp_path / "local.h5", *ARGS, "--views", "2")
    out = run_cli("extract", folder, "--cache", tmp_path / "ray.h5", *ARGS, "--views", "2", "--engine", "ray")
    assert "wrote 36, skipped 0 already cached, failed 1" in out.stdout
    assert "failed: red/broken.jpg: not an image" in out.stderr
    same_cache(tmp_path / "local.h5", tmp_path / "ray.h5")
    from cnncodes.cache import open_cache
    with open_cache(str(tmp_path / "ray.h5")) as c:
        assert c.views.max() == 2 and len(c) > 36  # view rows are there, not only centre rows
    again = run_cli("extract", folder, "--cache", tmp_path / "ray.h5", *ARGS, "--views", "2", "--engine", "ray")
    assert "wrote 0, skipped 37 already cached" in again.stdout


def _start(folder, cache, env=None, extra=()):
    return start_cli("extract", folder, "--cache", cache, *ARGS, "--engine", "ray", *extra, env=env)


def _wait_for(predicate, seconds=180):
    deadline = time.time() + seconds
    while time.time() < deadline and not predicate():
        time.sleep(0.05)
    return predicate()


@pytest.mark.ray
def test_a_dying_worker_is_replaced_and_the_result_is_complete(ray_available, tmp_path):
    data = tmp_path / "data"
    make_folder(str(data), per_class=30)
    pids = tmp_path / "pids"
    pids.mkdir()
    cache = tmp_path / "ray.h5"
    proc = _start(data, cache, env={"CNNCODES_RAY_PID_DIR": str(pids)}, extra=("--crop-size", "64"))
    assert _wait_for(lambda: committed_rows(cache) >= 8)
    victims = sorted(os.listdir(pids))
    assert victims
    os.kill(int(victims[0]), signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "wrote 90, skipped 0 already cached, failed 0" in out
    assert len(os.listdir(pids)) > len(victims)  # Ray started a replacement actor
    run_cli("extract", data, "--cache", tmp_path / "local.h5", *ARGS, "--crop-size", "64")
    same_cache(tmp_path / "local.h5", cache)


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch):
    from cnncodes.extract.errors import ExtractError
    from cnncodes.extract.engines.ray import check_available
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ExtractError, match=r"pip install 'cnncodes\[ray\]'"):
        check_available()
