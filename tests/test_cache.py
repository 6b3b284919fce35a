import os

import h5py
import numpy as np
import pytest

from cache import CacheLocked, CacheWriter, FingerprintMismatch, cache_lock, open_cache, recover_shards
from cache.store import check_fingerprint, shard_dir

ATTRS = {"schema_version": 1, "backbone": "toy", "layers": ["f"], "weights": "random:0",
         "preprocess": {"crop": 8}, "dtype": "float16", "precision": "fp32"}


def write(cache, rows, attrs=ATTRS, failures=()):
    writer = CacheWriter(cache, attrs, {"f": 3}, np.float16)
    for path, key, split, cls, value in rows:
        writer.add_rows([path], [key], [split], [cls], {"f": np.full((1, 3), value, np.float32)})
        writer.commit_shard()
    for path, key, reason in failures:
        writer.add_failures([path], [key], [reason])
    writer.close()


def test_fold_writes_the_documented_layout(tmp_path):
    cache = str(tmp_path / "c.h5")
    write(cache, [("b/1.jpg", "k1", "train", "b", 1.0), ("a/2.jpg", "k2", "val", "a", 2.0)],
          failures=[("a/bad.jpg", "k3", "empty file")])
    assert recover_shards(cache) == 3
    assert not [n for n in os.listdir(shard_dir(cache)) if n.endswith(".h5")]
    with h5py.File(cache, "r") as f:  # plain h5py, as the README promises
        assert f["codes/f"].dtype == np.float16 and f["codes/f"].shape == (2, 3)
        assert [s.decode() for s in f["class_names"][()]] == ["a", "b"]
        assert f["labels"][()].tolist() == [1, 0]
        assert f["failed/reasons"][0].decode() == "empty file"
        assert f.attrs["backbone"] == "toy"
    with open_cache(cache) as c:
        assert c.codes("f").dtype == np.float32
        assert c.codes("f", splits="val").tolist() == [[2.0, 2.0, 2.0]]
        assert c.labels_of("train").tolist() == [1]
        assert c.summary()["failed"] == 1


def test_fold_is_idempotent_and_appends(tmp_path):
    cache = str(tmp_path / "c.h5")
    write(cache, [("a/1.jpg", "k1", "train", "a", 1.0)])
    recover_shards(cache)
    # A shard re-folded after a kill between rename and delete must not duplicate rows.
    write(cache, [("a/1.jpg", "k1", "train", "a", 1.0), ("c/3.jpg", "k3", "test", "c", 3.0)])
    recover_shards(cache)
    with open_cache(cache) as c:
        assert c.paths == ["a/1.jpg", "c/3.jpg"]
        assert c.class_names == ["a", "c"]
        assert c.codes().tolist() == [[1.0] * 3, [3.0] * 3]


def test_changed_file_replaces_its_row(tmp_path):
    cache = str(tmp_path / "c.h5")
    write(cache, [("a/1.jpg", "k1", "train", "a", 1.0), ("a/2.jpg", "k2", "train", "a", 2.0)])
    recover_shards(cache)
    write(cache, [("a/1.jpg", "k1-new", "train", "a", 5.0)], failures=[("a/2.jpg", "k2-new", "truncated")])
    recover_shards(cache)
    with open_cache(cache) as c:
        assert c.paths == ["a/1.jpg"] and c.keys == ["k1-new"]
        assert c.codes().tolist() == [[5.0] * 3]
        assert c.failures == [("a/2.jpg", "truncated")]


def test_partial_shards_are_dropped(tmp_path):
    cache = str(tmp_path / "c.h5")
    write(cache, [("a/1.jpg", "k1", "train", "a", 1.0)])
    tmp_shard = os.path.join(shard_dir(cache), "shard-9-000001.h5.tmp")
    with open(tmp_shard, "wb") as f:
        f.write(b"half a shard")
    recover_shards(cache)
    assert not os.path.exists(tmp_shard)
    assert len(open_cache(cache)) == 1


def test_different_fingerprint_is_refused(tmp_path):
    cache = str(tmp_path / "c.h5")
    write(cache, [("a/1.jpg", "k1", "train", "a", 1.0)])
    recover_shards(cache)
    check_fingerprint(cache, dict(ATTRS, precision="bf16"))  # compute precision is recorded, not compared
    for key, value in [("layers", ["g"]), ("weights", "random:1"), ("preprocess", {"crop": 9}), ("backbone", "x")]:
        with pytest.raises(FingerprintMismatch, match=key):
            check_fingerprint(cache, dict(ATTRS, **{key: value}))


def test_second_writer_fails_fast(tmp_path):
    cache = str(tmp_path / "c.h5")
    with cache_lock(cache):
        with pytest.raises(CacheLocked, match="another extract"):
            with cache_lock(cache):
                pass
    with cache_lock(cache):  # released on exit
        pass


def test_missing_or_foreign_file_is_a_clear_error(tmp_path):
    from cache import CacheError
    with pytest.raises(CacheError, match="no such cache"):
        open_cache(tmp_path / "none.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(CacheError, match="not a cnncodes cache"):
        open_cache(other)
