"""The cache as other tools and users treat it: a file copied without its folder, one packed file
to move, and readers that opened the cache before a writer merged its segments away."""
import os
import shutil

import h5py
import numpy as np
import pytest

from cnncodes.cache import open_cache
from cnncodes.cache._manifest import segment_folder
from cnncodes.cache._manifest import read_manifest
from conftest import FAST_VGG, assert_same_cache, make_folder, make_image, run_cli

ARGS = [*FAST_VGG, "--shard-rows", "8"]


def extract(data, cache, *extra):
    return run_cli("extract", data, "--cache", cache, *ARGS, *extra)


def segment_files(cache):
    return sorted(n for n in os.listdir(segment_folder(str(cache))) if n.endswith(".h5"))


def test_cache_file_copied_alone_never_reads_as_data(image_folder, tmp_path):
    cache = tmp_path / "c.h5"
    extract(image_folder, cache)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(cache, elsewhere / "c.h5")  # the one file, without c.h5.shards/
    with h5py.File(elsewhere / "c.h5", "r") as f:  # docs/cache-format.md's plain-h5py reading
        codes, labels, paths = f["codes/fc7"][:], f["labels"][:], f["paths"][:]
        stat, keys, splits = f["stat"][:], f["keys"][:], f["splits"][:]
    assert codes.shape == (18, 4096) and np.isnan(codes).all()
    assert (labels == -1).all() and (stat == -1).all()
    assert all(p.decode().startswith("MISSING ROW: the segment folder c.h5.shards/") for p in paths)
    assert not set(splits.tolist()) & {b"train", b"val", b"test"} and not any(keys)
    for command in ("info", "fit"):
        out = run_cli(command, elsewhere / "c.h5", check=False)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "segment folder" in out.stderr and "is missing" in out.stderr and "cnncodes pack" in out.stderr
    out = run_cli("verify", elsewhere / "c.h5", check=False)
    assert out.returncode == 1 and "the segment folder" in out.stdout and "is missing" in out.stdout


def test_pack_makes_one_self_contained_file_equal_row_for_row(image_folder, tmp_path):
    (image_folder / "red" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    cache = tmp_path / "c.h5"
    extract(image_folder, cache)
    assert "cnncodes pack" in run_cli("info", cache).stdout
    out = run_cli("pack", cache, "--out", tmp_path / "packed.h5")
    assert "packed 18 rows" in out.stdout
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(tmp_path / "packed.h5", moved / "one.h5")  # alone: no folder travels with it
    assert not os.path.exists(segment_folder(str(moved / "one.h5")))
    with h5py.File(cache, "r") as a, h5py.File(moved / "one.h5", "r") as b:
        names_a, names_b = [], []
        a.visit(names_a.append)
        b.visit(names_b.append)
        assert sorted(set(names_a) - {"segments", "segments/names", "segments/rows", "segments/ranges"}) == \
            sorted(names_b)
        datasets = [n for n in names_b if isinstance(b[n], h5py.Dataset)]
        assert not any(b[n].is_virtual for n in datasets)
        for name in datasets:
            assert b[name].dtype == a[name].dtype and b[name].shape == a[name].shape
            np.testing.assert_array_equal(b[name][()], a[name][()])
        same = {k for k in a.attrs if k not in ("linked_through", "next_seq")}
        assert {k for k in b.attrs} == same | {"packed_from"}
        assert all(np.array_equal(np.asarray(a.attrs[k]), np.asarray(b.attrs[k])) for k in same)
    assert_same_cache(cache, moved / "one.h5")
    assert "self-contained" in run_cli("info", moved / "one.h5").stdout
    assert run_cli("verify", moved / "one.h5").stdout.strip().endswith("ok")
    run_cli("fit", moved / "one.h5", "--classifier", "centroid", "--model", tmp_path / "m.npz")
    predicted = run_cli("predict", tmp_path / "m.npz", image_folder / "red" / "0000.jpg")
    assert "0000.jpg" in predicted.stdout
    # extract into the packed file: it becomes a segmented cache again, keeping its rows and stat data
    make_image(str(image_folder / "red" / "new.jpg"), seed=77)
    again = extract(image_folder, moved / "one.h5")
    assert "wrote 1, skipped 19 already cached" in again.stdout  # 18 rows + the recorded failure


@pytest.mark.parametrize("reader", ["plain h5py", "open_cache"])
def test_a_reader_opened_before_a_writer_merges_keeps_its_rows(tmp_path, reader):
    """Each reader alone: plain h5py cannot register (the writer finds its open file), open_cache
    holds the readers' lock. Both had read nothing of the codes before the writer ran."""
    data = tmp_path / "data"
    make_folder(str(data), per_class=8)
    cache = tmp_path / "c.h5"
    extract(data, cache)
    with open_cache(cache) as c:
        expected = {"paths": c.paths, "labels": c.labels.tolist(), "codes": c.codes()}
    opened_with = set(read_manifest(str(cache)).segments)
    handle = h5py.File(cache, "r") if reader == "plain h5py" else open_cache(cache)
    try:
        make_folder(str(data), per_class=22, start=8)  # 42 more photos, in 8-row shards: merges
        extract(data, cache)
        now = set(read_manifest(str(cache)).segments)
        assert opened_with - now, "the writer merged nothing away; the test needs it to"
        assert opened_with <= set(segment_files(cache)), "a segment a reader may need was deleted"
        if reader == "plain h5py":
            np.testing.assert_array_equal(handle["codes/fc7"][:], expected["codes"])
            assert handle["labels"][:].tolist() == expected["labels"]
            assert [p.decode() for p in handle["paths"][:]] == expected["paths"]
        else:
            np.testing.assert_array_equal(handle.codes(), expected["codes"])
            assert handle.paths == expected["paths"] and handle.labels.tolist() == expected["labels"]
        assert "retired: " in run_cli("verify", cache).stdout  # kept, said, not a problem
    finally:
        handle.close()
    with open_cache(cache) as c:
        assert len(c) == 90
    extract(data, cache)  # nothing new; no reader left: the retired segments go
    assert set(segment_files(cache)) == set(read_manifest(str(cache)).segments)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_codes_read_as_missing_are_the_rows_holding_nan_and_only_those(dtype):
    """missing_rows' bit test on float16 (numpy's isnan is slow there) agrees with isnan: NaN of
    either sign and any payload counts, infinities and the largest finite values do not."""
    from cnncodes.cache.reader import missing_rows
    codes = np.random.default_rng(0).normal(size=(64, 40)).astype(dtype)
    codes[3, 5], codes[9, 0], codes[20] = np.nan, -np.nan, np.nan
    codes[11, 7], codes[12, 1], codes[13, 2] = np.inf, -np.inf, np.finfo(dtype).max
    if dtype == np.float16:
        codes.view(np.uint16)[30, 4] = 0x7C01  # a NaN with the smallest payload
    expected = int(np.isnan(codes).any(axis=1).sum())
    assert expected == (4 if dtype == np.float16 else 3)
    assert missing_rows("codes/layer", codes) == expected
