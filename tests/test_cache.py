import os

import h5py
import numpy as np
import pytest

from cnncodes.cache import (CacheError, CacheLocked, Fingerprint, FingerprintMismatch, cache_lock, existing_fingerprint,
                   open_cache, open_for_append)
from cnncodes.cache._manifest import segment_folder
from cnncodes.cache.append import recover
from cnncodes.cache import append as append_module

FP = Fingerprint(backbone="toy", layers=("f",), weights="random:0", preprocess={"crop": 8}, dtype="float16")
WIDTHS = {"f": 3}


def stat(i):
    return (100 + i, 1_000_000 + i, 7 + i)


def write(cache, rows, fingerprint=FP, failures=(), per_shard=1, classes=None, background=True):
    """rows: (path, key, split, class, value); one shard per ``per_shard`` rows (on a background writer,
    shards that wait for it may join: background=False for a segment a shard)."""
    classes = classes if classes is not None else sorted({r[3] for r in rows})
    with open_for_append(cache, fingerprint, WIDTHS, classes, background=background) as session:
        for i, (path, key, split, cls, value) in enumerate(rows):
            session.add_rows([path], [key], [split], [cls], [stat(i)], {"f": np.full((1, 3), value, np.float32)})
            if (i + 1) % per_shard == 0:
                session.commit_shard()
        for path, key, reason in failures:
            session.add_failures([path], [key], [reason], [stat(0)])
    return session


def segment_files(cache):
    return sorted(n for n in os.listdir(segment_folder(cache)) if n.endswith(".h5"))


def test_writes_the_documented_layout(tmp_path):
    cache = str(tmp_path / "c.h5")
    write(cache, [("b/1.jpg", "k1", "train", "b", 1.0), ("a/2.jpg", "k2", "val", "a", 2.0)],
          failures=[("a/bad.jpg", "k3", "empty file")])
    with h5py.File(cache, "r") as f:  # plain h5py, as docs/cache-format.md promises
        assert f["codes/f"].dtype == np.float16 and f["codes/f"].shape == (2, 3)
        assert f["codes/f"][:].tolist() == [[1.0] * 3, [2.0] * 3]
        assert [s.decode() for s in f["class_names"][()]] == ["a", "b"]
        assert f["labels"][()].tolist() == [1, 0]
        assert [p.decode() for p in f["paths"][()]] == ["b/1.jpg", "a/2.jpg"]
        assert f["keys"][0] == b"k1" and f["splits"][1] == b"val"
        assert f["stat"][0].tolist() == list(stat(0))
        assert f["failed/reasons"][0].decode() == "empty file"
        assert f.attrs["backbone"] == "toy" and f.attrs["schema_version"] == 2 and f.attrs["n_rows"] == 2
    with open_cache(cache) as c:
        assert c.codes("f").dtype == np.float32
        assert c.codes("f", splits="val").tolist() == [[2.0, 2.0, 2.0]]
        assert c.labels_of("train").tolist() == [1]
        assert c.summary()["failed"] == 1 and c.summary()["classes"] == {"a": 1, "b": 1}


def test_appending_does_not_rewrite_old_rows_and_merges_geometrically(tmp_path):
    cache = str(tmp_path / "c.h5")
    rows = [(f"a/{i:03d}.jpg", f"k{i}", "train", "a", float(i)) for i in range(64)]
    write(cache, rows[:32], per_shard=1, background=False)
    files = segment_files(cache)
    assert len(files) == 1  # 32 one-row shards merged like a binary counter: 32 = one segment
    before = os.stat(os.path.join(segment_folder(cache), files[0]))
    write(cache, rows[32:35], per_shard=1, background=False)
    after = os.stat(os.path.join(segment_folder(cache), files[0]))
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)  # untouched
    assert len(segment_files(cache)) == 3  # 32 + 2 + 1 (binary counter)
    write(cache, rows[35:], per_shard=1)
    with open_cache(cache) as c:
        assert c.paths == [r[0] for r in rows]
        assert c.codes().tolist() == [[float(i)] * 3 for i in range(64)]
    assert len(segment_files(cache)) <= 7


def test_changed_file_replaces_its_row_and_failure_replaces_row(tmp_path):
    cache = str(tmp_path / "c.h5")
    write(cache, [("a/1.jpg", "k1", "train", "a", 1.0), ("a/2.jpg", "k2", "train", "a", 2.0),
                  ("a/3.jpg", "k3", "train", "a", 3.0)], per_shard=3)
    write(cache, [("a/1.jpg", "k1-new", "train", "a", 5.0)], failures=[("a/2.jpg", "k2-new", "truncated")])
    with open_cache(cache) as c:
        assert c.paths == ["a/3.jpg", "a/1.jpg"] and c.keys == ["k3", "k1-new"]
        assert c.codes().tolist() == [[3.0] * 3, [5.0] * 3]
        assert c.failures == [("a/2.jpg", "truncated")]
    write(cache, [("a/2.jpg", "k2-fixed", "train", "a", 6.0)])
    with open_cache(cache) as c:
        assert c.paths == ["a/3.jpg", "a/1.jpg", "a/2.jpg"] and c.failures == []


def test_prune_and_carry(tmp_path):
    cache = str(tmp_path / "c.h5")
    write(cache, [(f"a/{i}.jpg", f"k{i}", "train", "a", float(i)) for i in range(6)], per_shard=6)
    with open_for_append(cache, FP, WIDTHS) as session:
        assert session.lookup("a/2.jpg").key == "k2" and session.lookup("zz") is None
        session.carry_rows(["a/1.jpg"], [(1, 2, 3)])
        session.remove(["a/4.jpg", "a/5.jpg"])
    with open_cache(cache) as c:
        assert c.paths == ["a/0.jpg", "a/2.jpg", "a/3.jpg", "a/1.jpg"]
        assert c.codes()[:, 0].tolist() == [0.0, 2.0, 3.0, 1.0]
    with h5py.File(cache) as f:
        assert f["stat"][3].tolist() == [1, 2, 3]


def test_killed_after_a_shard_was_written_links_it_on_next_open(tmp_path, monkeypatch):
    cache = str(tmp_path / "c.h5")
    write(cache, [("a/1.jpg", "k1", "train", "a", 1.0)])
    real_link = append_module.AppendSession._link
    calls = []

    def die_before_second_link(self, name):
        calls.append(name)
        if not self._open or len(calls) < 2:
            return real_link(self, name)
        raise KeyboardInterrupt  # the shard file is on disk, the cache file does not list it yet
    monkeypatch.setattr(append_module.AppendSession, "_link", die_before_second_link)
    with pytest.raises(KeyboardInterrupt):
        with open_for_append(cache, FP, WIDTHS, ["a"], background=False) as s:
            s.add_rows(["a/2.jpg"], ["k2"], ["train"], ["a"], [stat(2)], {"f": np.full((1, 3), 2.0)})
            s.commit_shard()
            s.add_rows(["a/3.jpg"], ["k3"], ["val"], ["a"], [stat(3)], {"f": np.full((1, 3), 3.0)})
            s.commit_shard()
    monkeypatch.setattr(append_module.AppendSession, "_link", real_link)
    assert open_cache(cache).paths == ["a/1.jpg", "a/2.jpg"]
    assert recover(cache) == 1
    assert open_cache(cache).paths == ["a/1.jpg", "a/2.jpg", "a/3.jpg"]
    assert recover(cache) == 0


def test_partial_files_are_dropped(tmp_path):
    cache = str(tmp_path / "c.h5")
    write(cache, [("a/1.jpg", "k1", "train", "a", 1.0)])
    tmp_shard = os.path.join(segment_folder(cache), "seg-00000099.h5.tmp")
    with open(tmp_shard, "wb") as f:
        f.write(b"half a shard")
    recover(cache)
    assert not os.path.exists(tmp_shard)
    assert len(open_cache(cache)) == 1


def test_missing_segment_is_a_clear_error_not_zeros(tmp_path):
    cache = str(tmp_path / "c.h5")
    write(cache, [("a/1.jpg", "k1", "train", "a", 1.0)])
    os.remove(os.path.join(segment_folder(cache), segment_files(cache)[0]))
    with pytest.raises(CacheError, match="segment file"):
        open_cache(cache)


def test_different_fingerprint_is_refused(tmp_path):
    from dataclasses import replace
    cache = str(tmp_path / "c.h5")
    write(cache, [("a/1.jpg", "k1", "train", "a", 1.0)])
    write(cache, [("a/2.jpg", "k2", "train", "a", 1.0)], fingerprint=replace(FP, precision="bf16"))
    assert existing_fingerprint(cache).precision == "bf16,fp32"  # recorded, not compared
    for key, value in [("layers", ("g",)), ("weights", "random:1"), ("preprocess", {"crop": 9}), ("backbone", "x")]:
        with pytest.raises(FingerprintMismatch, match=key):
            write(cache, [("a/3.jpg", "k3", "train", "a", 1.0)], fingerprint=replace(FP, **{key: value}))
    assert FP.compatible_with(replace(FP, precision="fp16")) and not FP.compatible_with(replace(FP, dtype="float32"))
    assert "toy f, weights random:0" in FP.describe()


def test_schema1_cache_is_read_and_upgraded(tmp_path):
    from cnncodes.cache.schema import STR
    cache = str(tmp_path / "old.h5")
    with h5py.File(cache, "w") as f:
        for k, v in FP.to_attrs().items():
            f.attrs[k] = v if not isinstance(v, dict) else str(v).replace("'", '"')
        f.attrs["schema_version"] = 1
        f["paths"] = np.array(["a/1.jpg", "b/2.jpg"], dtype=STR)
        f["keys"] = np.array(["k1", "k2"], dtype=STR)
        f["splits"] = np.array(["train", "val"], dtype=STR)
        f["labels"] = np.array([0, 1], np.int32)
        f["class_names"] = np.array(["a", "b"], dtype=STR)
        f["codes/f"] = np.ones((2, 3), np.float16)
        for n in ("paths", "keys", "reasons"):
            f[f"failed/{n}"] = np.array([], dtype=STR)
    with open_cache(cache) as c:
        assert c.paths == ["a/1.jpg", "b/2.jpg"] and c.split_counts() == {"train": 1, "val": 1}
    write(cache, [("a/3.jpg", "k3", "test", "a", 2.0)])
    with open_cache(cache) as c:
        assert c.segmented and c.paths == ["a/1.jpg", "b/2.jpg", "a/3.jpg"] and c.labels.tolist() == [0, 1, 0]


def test_second_writer_fails_fast(tmp_path):
    cache = str(tmp_path / "c.h5")
    with cache_lock(cache):
        with pytest.raises(CacheLocked, match="another extract"):
            with cache_lock(cache):
                pass
    with cache_lock(cache):  # released on exit
        pass


def test_missing_or_foreign_file_is_a_clear_error(tmp_path):
    with pytest.raises(CacheError, match="no such cache"):
        open_cache(tmp_path / "none.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(CacheError, match="not a cnncodes cache"):
        open_cache(other)


def test_a_refused_second_lock_in_the_same_process_keeps_the_first(tmp_path):
    """POSIX record locks drop when the process closes *any* descriptor of the file: the refusal
    must not open (and close) one, or the held lock is gone for every other process."""
    import subprocess
    import sys
    cache = str(tmp_path / "c.h5")
    probe = ("import sys; from cnncodes.cache import cache_lock, CacheLocked\n"
             "try:\n    with cache_lock(sys.argv[1]): print('taken')\nexcept CacheLocked: print('refused')")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with cache_lock(cache):
        with pytest.raises(CacheLocked, match="this process"):
            with cache_lock(cache):
                pass
        other = subprocess.run([sys.executable, "-c", probe, cache, root], capture_output=True, text=True)
        assert other.stdout.strip() == "refused", other.stderr


def test_verify_merges_a_recompute_into_its_report_and_applies_the_bar(tmp_path):
    """verify_cache owns the --recompute merge (once pipeline.py's): the re-extraction runs only on
    a sound file, its failures are missing images, and a worst cosine under the bar is a problem."""
    from cnncodes.cache.verify import verify_cache
    cache = str(tmp_path / "c.h5")
    write(cache, [("a.jpg", "k1", "train", "x", 1.0), ("b.jpg", "k2", "val", "y", 2.0)])
    calls = []

    def recompute(result):
        return lambda: calls.append(1) or result
    good = verify_cache(cache, recompute=recompute((0.9995, 2, [])), min_cosine=0.99)
    assert good.ok and (good.worst_cosine, good.recomputed) == (0.9995, 2)
    low = verify_cache(cache, recompute=recompute((0.5, 1, [("b.jpg", "cannot be decoded")])), min_cosine=0.99)
    assert low.problems == ["re-extracted codes differ: worst cosine 0.50000 < 0.99"]
    assert low.missing == ["b.jpg (cannot be decoded)"] and not low.ok
    with open(cache, "r+b") as f:
        f.truncate(os.path.getsize(cache) // 2)
    broken = verify_cache(cache, recompute=recompute((1.0, 2, [])), min_cosine=0.99)
    assert broken.problems and broken.recomputed == 0 and len(calls) == 2  # not re-extracted: the file failed first
    with pytest.raises(ValueError, match="min_cosine"):
        verify_cache(cache, recompute=recompute((1.0, 2, [])))
