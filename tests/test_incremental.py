"""Re-runs read only what changed (stat data, as git's index does); vanished files are counted and pruned."""
import builtins
import json
import os

import numpy as np

from cnncodes.cache import open_cache
from conftest import FAST_VGG, make_image, run_cli
from cnncodes.extract import ExtractConfig, run_extract
from cnncodes.extract.backbones import BackboneSpec

IMAGE_SUFFIXES = (".jpg", ".png")


def extract(folder, cache, **overrides):
    settings = dict(weights="random", crop_size=32, workers=0, batch_size=4, progress=False, dtype="float32")
    return run_extract(ExtractConfig(str(folder), str(cache), **{**settings, **overrides}))


def rows(cache):
    with open_cache(cache) as c:
        return dict(zip(c.paths, c.codes())), c.failures


def test_noop_rerun_opens_no_image_and_builds_no_network(image_folder, tmp_path, monkeypatch):
    cache = tmp_path / "c.h5"
    first = extract(image_folder, cache)
    assert first.written == 18
    opened, built = [], []
    real_open, real_build = builtins.open, BackboneSpec.build

    def spy_open(file, *args, **kwargs):
        if str(file).endswith(IMAGE_SUFFIXES):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def spy_build(self, *args, **kwargs):
        built.append(self.name)
        return real_build(self, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(BackboneSpec, "build", spy_build)
    again = extract(image_folder, cache)
    assert (again.written, again.skipped, again.failed) == (0, 18, 0)
    assert opened == [] and built == []
    monkeypatch.undo()
    rehashed = extract(image_folder, cache, rehash=True)  # --rehash reads every file, re-encodes none
    assert (rehashed.written, rehashed.unchanged) == (0, 18)


def test_changed_touched_and_new_files(image_folder, tmp_path):
    cache = tmp_path / "c.h5"
    extract(image_folder, cache)
    before, _ = rows(cache)
    changed = image_folder / "red" / "0001.jpg"
    make_image(str(changed), seed=999, tint=(90, 0, 0))          # new bytes under an old name
    touched = image_folder / "green" / "0002.jpg"
    st = os.stat(touched)
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns - 5_000_000_000))  # same bytes, new mtime (past: a future one is racy)
    make_image(str(image_folder / "blue" / "0100.jpg"), seed=77, tint=(0, 0, 90))
    summary = extract(image_folder, cache)
    assert (summary.written, summary.unchanged, summary.skipped) == (2, 1, 16)
    after, _ = rows(cache)
    assert len(after) == 19
    assert not np.array_equal(after["red/0001.jpg"], before["red/0001.jpg"])
    np.testing.assert_array_equal(after["green/0002.jpg"], before["green/0002.jpg"])  # kept, not recomputed
    again = extract(image_folder, cache)  # the touched file's new stat was remembered
    assert (again.written, again.unchanged, again.skipped) == (0, 0, 19)


def test_vanished_files_are_counted_then_pruned(image_folder, tmp_path):
    cache = tmp_path / "c.h5"
    (image_folder / "red" / "broken.jpg").write_bytes(b"not an image")
    extract(image_folder, cache)
    os.remove(image_folder / "red" / "0000.jpg")
    os.remove(image_folder / "red" / "broken.jpg")
    out = run_cli("extract", image_folder, "--cache", cache, *FAST_VGG, "--dtype", "float32")
    assert "2 cached rows have no file under the data folder (--prune drops them)" in out.stdout
    assert json.loads(run_cli("info", cache, "--json").stdout)["vanished"] == 2
    assert "vanished: 2 rows" in run_cli("info", cache).stdout
    assert len(open_cache(cache)) == 18  # never silently dropped
    out = run_cli("extract", image_folder, "--cache", cache, *FAST_VGG, "--dtype", "float32", "--prune")
    assert "pruned 2 rows" in out.stdout
    kept, failures = rows(cache)
    assert len(kept) == 17 and "red/0000.jpg" not in kept and failures == []
    assert json.loads(run_cli("info", cache, "--json").stdout)["vanished"] == 0


def test_broken_file_is_not_retried_until_its_bytes_change(image_folder, tmp_path):
    cache = tmp_path / "c.h5"
    broken = image_folder / "red" / "broken.jpg"
    broken.write_bytes(b"not an image")
    assert extract(image_folder, cache).failed == 1
    st = os.stat(broken)
    os.utime(broken, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = extract(image_folder, cache)
    assert (touched.failed, touched.unchanged) == (0, 1)
    make_image(str(broken), seed=3, tint=(90, 0, 0))  # fixed
    fixed = extract(image_folder, cache)
    assert fixed.written == 1
    kept, failures = rows(cache)
    assert "red/broken.jpg" in kept and failures == []
