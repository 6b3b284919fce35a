"""Re-runs that must not quietly trust the wrong thing: another split policy, a file rewritten
within its timestamp's granularity, a Ray head that is not there."""
import os
import time

import pytest

from cnncodes.cache import open_cache
from conftest import FAST_VGG, make_image, run_cli


def test_another_split_seed_on_an_existing_cache_is_refused_in_one_line(image_folder, tmp_path):
    cache = tmp_path / "c.h5"
    run_cli("extract", image_folder, "--cache", cache, *FAST_VGG)
    make_image(str(image_folder / "red" / "new.jpg"), seed=99)
    out = run_cli("extract", image_folder, "--cache", cache, *FAST_VGG, "--split-seed", "1", check=False)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "split_policy: cache has --split-seed 0" in out.stderr and "this run --split-seed 1" in out.stderr
    with open_cache(cache) as c:
        assert len(c) == 18  # nothing added under the other policy
    assert "wrote 1," in run_cli("extract", image_folder, "--cache", cache, *FAST_VGG).stdout


def test_a_file_rewritten_within_a_coarse_mtime_tick_is_read_again(tmp_path):
    """A filesystem with whole-second timestamps (forced here with utime): a photo rewritten in place,
    same size, same second, after its row was committed, must not pass as unchanged. The forced second
    lies a little ahead, so the first run's walk surely stats the files within it, as on such a disk."""
    data = tmp_path / "data"
    paths = [make_image(str(data / c / f"{i}.bmp"), seed=10 * k + i, tint=(60 * k, 0, 0), fmt="BMP")
             for k, c in enumerate(("a", "b")) for i in range(3)]
    second = (time.time_ns() // 1_000_000_000 + 5) * 1_000_000_000
    for path in paths:
        os.utime(path, ns=(second, second))
    cache = tmp_path / "c.h5"
    assert "wrote 6," in run_cli("extract", data, "--cache", cache, *FAST_VGG).stdout
    assert time.time_ns() < second + 2_000_000_000, "the first run took too long for the test's second"
    with open_cache(cache) as c:
        before = dict(zip(c.paths, c.keys))
    target = data / "a" / "0.bmp"
    inode, size = os.stat(target).st_ino, os.path.getsize(target)
    replacement = make_image(str(tmp_path / "other.bmp"), seed=12345, fmt="BMP")
    with open(replacement, "rb") as src, open(target, "r+b") as dst:  # in place: same inode
        dst.write(src.read())
    os.utime(target, ns=(second, second))
    assert os.stat(target).st_ino == inode and os.path.getsize(target) == size
    out = run_cli("extract", data, "--cache", cache, *FAST_VGG)
    assert "wrote 1," in out.stdout, out.stdout  # the rewritten photo, found by its bytes
    with open_cache(cache) as c:
        after = dict(zip(c.paths, c.keys))
    assert after["a/0.bmp"] != before["a/0.bmp"]
    assert {p: k for p, k in after.items() if p != "a/0.bmp"} == {p: k for p, k in before.items() if p != "a/0.bmp"}


def test_an_unreachable_ray_head_is_one_line_within_seconds(image_folder, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")
    started = time.perf_counter()
    out = run_cli("extract", image_folder, "--cache", tmp_path / "c.h5", *FAST_VGG, "--engine", "ray",
                  "--ray-address", "127.0.0.1:9", check=False)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "--ray-address 127.0.0.1:9: cannot reach a Ray head there" in out.stderr
    assert "ray start --head" in out.stderr and time.perf_counter() - started < 60
