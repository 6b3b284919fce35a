"""Sources beyond the class folders: manifests (CSV, Parquet), unlabeled folders, tar shards.

The same images through each give the same codes, labels and splits as through a folder.
"""
import csv
import io
import json
import os
import tarfile

import numpy as np
import pytest

from cnncodes.cache import open_cache
from conftest import FAST_VGG, make_folder, run_cli

ARGS = [*FAST_VGG, "--layer", "fc7"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Eighteen tinted photos in class folders, and their cache: what every other source must equal."""
    root = tmp_path_factory.mktemp("src")
    images = root / "images"
    make_folder(str(images))
    cache = root / "folder.h5"
    run_cli("extract", images, "--cache", cache, *ARGS)
    return images, cache


def by_key(cache):
    """content key -> (class name or None, split, codes): a row independent of how it was named."""
    with open_cache(str(cache)) as c:
        codes = c.codes("fc7")
        names = [c.class_names[i] if i >= 0 else None for i in c.labels]
        return {k: (names[i], str(c.splits[i]), codes[i]) for i, k in enumerate(c.keys)}


def assert_same_rows(a, b, labels=True):
    rows_a, rows_b = by_key(a), by_key(b)
    assert sorted(rows_a) == sorted(rows_b)
    for key, (label, split, codes) in rows_a.items():
        assert rows_b[key][1] == split and np.array_equal(rows_b[key][2], codes)
        if labels:
            assert rows_b[key][0] == label


def image_files(images):
    return sorted(os.path.relpath(os.path.join(d, n), images).replace(os.sep, "/")
                  for d, _, names in os.walk(images) for n in names if n.endswith(".jpg"))


def test_a_csv_manifest_gives_the_folders_rows_and_records_bad_rows(reference, tmp_path):
    images, folder_cache = reference
    manifest = tmp_path / "list.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        for i, rel in enumerate(image_files(images)):
            path = str(images / rel) if i % 2 else os.path.relpath(images / rel, tmp_path)  # absolute and relative
            writer.writerow([path, rel.split("/")[0]])
        writer.writerow(["", "red"])                       # row 20: an empty path
        writer.writerow(["gone/nothing.jpg", "red"])       # row 21: no such file
    cache = tmp_path / "m.h5"
    out = run_cli("extract", manifest, "--cache", cache, *ARGS)
    assert "wrote 18" in out.stdout and "failed 2" in out.stdout
    assert_same_rows(folder_cache, cache)
    with open_cache(str(cache)) as c:
        failures = dict(c.failures)
    assert failures["list.csv row 20"] == "empty path"
    assert failures["gone/nothing.jpg"].startswith("list.csv row 21: no such file")
    again = run_cli("extract", manifest, "--cache", cache, *ARGS)
    assert "wrote 0, skipped 20" in again.stdout  # nothing re-read, the bad rows not recorded twice
    assert run_cli("verify", cache, "--images").stdout.strip().endswith("ok")


def test_a_parquet_manifest_with_splits_and_without_labels(reference, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    images, _ = reference
    files = image_files(images)
    splits = ["train", "val", "test"] * (len(files) // 3)
    os.symlink(images, tmp_path / "imgs")
    manifest = tmp_path / "list.parquet"  # paths relative to the manifest's own folder
    pq.write_table(pa.table({"path": [f"imgs/{f}" for f in files], "split": splits}), manifest)
    cache = tmp_path / "p.h5"
    run_cli("extract", manifest, "--cache", cache, *ARGS)
    info = json.loads(run_cli("info", cache, "--json").stdout)
    assert info["unlabeled"] == 18 and info["classes"] == {}
    with open_cache(str(cache)) as c:
        assert dict(zip(c.paths, c.splits.tolist())) == dict(zip([f"imgs/{f}" for f in files], splits))
    refused = run_cli("fit", cache, check=False)
    assert refused.returncode == 2 and "no labelled rows" in refused.stderr

    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"path": [str(images / files[0])], "split": ["holdout"]}), bad)
    out = run_cli("extract", bad, "--cache", tmp_path / "b.h5", *ARGS)
    assert "failed 1" in out.stdout and "unknown split 'holdout'" in out.stderr


def test_a_path_listed_twice_is_refused_in_one_line(reference, tmp_path):
    images, _ = reference
    manifest = tmp_path / "twice.csv"
    manifest.write_text(f"path,label\n{images}/red/0000.jpg,red\n{images}/red/0000.jpg,blue\n")
    out = run_cli("extract", manifest, "--cache", tmp_path / "t.h5", *ARGS, check=False)
    assert out.returncode == 2 and "listed twice (rows 2 and 3)" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "t.h5")


def test_unlabeled_images_are_cached_and_left_out_of_fitting_with_a_note(reference, tmp_path):
    images, folder_cache = reference
    flat = tmp_path / "flat"
    for rel in image_files(images):  # the same photos, no class folders
        os.makedirs(flat, exist_ok=True)
        os.symlink(images / rel, flat / rel.replace("/", "-"))
    cache = tmp_path / "u.h5"
    run_cli("extract", flat, "--cache", cache, *ARGS)
    assert_same_rows(folder_cache, cache, labels=False)
    assert json.loads(run_cli("info", cache, "--json").stdout)["unlabeled"] == 18

    # A manifest labelling two thirds of them: fit uses those, and says what it left out.
    manifest = tmp_path / "some.csv"
    rows = [(str(images / rel), rel.split("/")[0] if i % 3 else "") for i, rel in enumerate(image_files(images))]
    manifest.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    mixed = tmp_path / "mixed.h5"
    run_cli("extract", manifest, "--cache", mixed, *ARGS)
    fit = run_cli("fit", mixed, "--classifier", "centroid", "--json", check=False)
    if fit.returncode == 0:
        result = json.loads(fit.stdout)
        assert result["unlabeled_left_out"] == 6 and result["n_fit"] + result["n_eval"] <= 12
    else:  # 12 labelled rows may leave no val or test row: then the refusal is about splits
        assert "val or test" in fit.stderr
    assert "6 unlabeled rows left out" in fit.stderr


def write_shard(path, members):
    """members: (name, bytes) in order, into an uncompressed tar."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_tar_shards_give_the_folders_rows_and_survive_a_corrupt_member_and_a_cut(reference, tmp_path):
    images, folder_cache = reference
    files = image_files(images)
    shards = tmp_path / "shards"
    shards.mkdir()
    for s in range(3):  # six photos per shard, webdataset style: KEY.jpg + KEY.cls
        members = []
        for i, rel in enumerate(files[s::3]):
            key = f"{s:02d}{i:04d}"
            members += [(f"{key}.jpg", (images / rel).read_bytes()), (f"{key}.cls", rel.split("/")[0].encode())]
        write_shard(shards / f"data-{s:06d}.tar", members)
    pattern = str(shards / "data-{000000..000002}.tar")
    cache = tmp_path / "tar.h5"
    out = run_cli("extract", pattern, "--cache", cache, *ARGS)
    assert "wrote 18" in out.stdout
    assert_same_rows(folder_cache, cache)
    with open_cache(str(cache)) as c:
        assert sorted(c.paths)[0] == "data-000000.tar/000000.jpg"
    assert "wrote 0, skipped 18" in run_cli("extract", pattern, "--cache", cache, *ARGS).stdout
    assert run_cli("verify", cache, "--images", "--data", pattern).stdout.strip().endswith("ok")

    # A fourth shard: a corrupt member, then a good one, then a member cut off by truncation.
    good = (images / files[0]).read_bytes()
    write_shard(shards / "data-000003.tar", [("bad.jpg", b"not a jpeg at all"), ("good.jpg", good),
                                              ("cut.jpg", good)])
    with tarfile.open(shards / "data-000003.tar") as tar:
        cut = tar.getmember("cut.jpg")
    with open(shards / "data-000003.tar", "r+b") as f:
        f.truncate(cut.offset_data + cut.size // 2)  # the shard ends halfway through cut.jpg's bytes
    pattern = str(shards / "data-{000000..000003}.tar")
    out = run_cli("extract", pattern, "--cache", cache, *ARGS)
    assert "wrote 1, skipped 18 already cached, failed 2" in out.stdout
    with open_cache(str(cache)) as c:
        failures = dict(c.failures)
        assert "data-000003.tar/good.jpg" in c.paths
    assert "truncated" in failures["data-000003.tar/cut.jpg"]
    assert "data-000003.tar/bad.jpg" in failures


def test_brace_patterns_expand_as_webdataset_writes_them():
    from cnncodes.extract.sources.tar_shards import expand_braces
    assert expand_braces("a-{00..02}.tar") == ["a-00.tar", "a-01.tar", "a-02.tar"]
    assert expand_braces("{x,y}/s-{8..10}.tar") == ["x/s-8.tar", "x/s-9.tar", "x/s-10.tar",
                                                    "y/s-8.tar", "y/s-9.tar", "y/s-10.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_a_shard_cut_inside_a_header_keeps_the_members_before_it(tmp_path):
    from cnncodes.extract.sources.tar_shards import scan_tar_shards
    write_shard(tmp_path / "s.tar", [("a.jpg", b"A" * 700), ("a.cls", b"red"), ("b.jpg", b"B" * 700)])
    with tarfile.open(tmp_path / "s.tar") as tar:
        b = tar.getmember("b.jpg")
    with open(tmp_path / "s.tar", "r+b") as f:
        f.truncate(b.offset + 100)  # inside b.jpg's header
    scan = scan_tar_shards(str(tmp_path / "s.tar"))
    assert [(r.path, r.label) for r in scan.records] == [("s.tar/a.jpg", "red")]
    assert len(scan.failures) == 1 and "truncated" in scan.failures[0][1]
    from cnncodes.extract.sources import read_bytes
    assert read_bytes(scan.records[0]) == b"A" * 700


def test_a_parquet_file_of_image_bytes_is_read_by_row_group(reference, tmp_path):
    """Hugging Face datasets' shape: an image column of {bytes, path} structs, a label, in several
    row groups; a corrupt row and an empty one are failures, the rest equal the folder's rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    images, folder_cache = reference
    files = image_files(images)
    cells = [{"bytes": (images / rel).read_bytes(), "path": rel} for rel in files]
    labels = [rel.split("/")[0] for rel in files]
    cells += [{"bytes": b"\xff\xd8 not really a jpeg", "path": "bad.jpg"}, {"bytes": None, "path": None}]
    labels += ["red", "red"]
    table = pa.table({"image": cells, "label": labels})
    data = tmp_path / "train.parquet"
    pq.write_table(table, data, row_group_size=5)
    assert pq.ParquetFile(data).num_row_groups == 4
    cache = tmp_path / "pq.h5"
    out = run_cli("extract", data, "--cache", cache, *ARGS)
    assert "wrote 18" in out.stdout and "failed 2" in out.stdout
    assert_same_rows(folder_cache, cache)
    with open_cache(str(cache)) as c:
        assert sorted(c.paths)[:2] == ["train.parquet/0", "train.parquet/1"]
        failures = dict(c.failures)
    assert "no image bytes" in failures["train.parquet/19"] and "train.parquet/18" in failures
    assert "wrote 0, skipped 20" in run_cli("extract", data, "--cache", cache, *ARGS).stdout


@pytest.fixture
def s3(monkeypatch):
    """A real S3-compatible server (moto's) on 127.0.0.1, reached through the AWS environment
    variables as a user's s3fs would; yields (filesystem, restart) where restart() brings the
    server back on the same port after a stop (its objects live in this process)."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ENDPOINT_URL", f"http://{host}:{port}")):
        monkeypatch.setenv(name, value)
    import s3fs
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.makedirs("bucket", exist_ok=True)  # moto keeps its buckets for the whole process
    servers = [server]

    def restart():
        servers.append(moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False))
        servers[-1].start()
    yield fs, restart, servers
    for running in servers:
        try:
            running.stop()
        except Exception:
            pass
    s3fs.S3FileSystem.clear_instance_cache()


def test_object_storage_gives_the_folders_rows_and_reruns_by_etag(reference, tmp_path, s3):
    fs, restart, servers = s3
    images, folder_cache = reference
    for rel in image_files(images):
        fs.pipe(f"bucket/photos/{rel}", (images / rel).read_bytes())
    cache = tmp_path / "s3.h5"
    out = run_cli("extract", "s3://bucket/photos", "--cache", cache, *ARGS)
    assert "wrote 18" in out.stdout
    assert_same_rows(folder_cache, cache)
    assert "wrote 0, skipped 18" in run_cli("extract", "s3://bucket/photos/", "--cache", cache, *ARGS).stdout
    assert run_cli("verify", cache, "--images").stdout.strip().endswith("ok")  # re-hashed in the bucket
    forked = tmp_path / "workers.h5"  # decoding workers (forked processes) fetch the objects themselves
    run_cli("extract", "s3://bucket/photos", "--cache", forked, *ARGS, "--workers", "2")
    assert_same_rows(folder_cache, forked)

    files = image_files(images)
    fs.rm(f"bucket/photos/{files[0]}")                                          # deleted
    fs.pipe(f"bucket/photos/{files[1]}", (images / files[2]).read_bytes())     # changed in place
    fs.pipe("bucket/photos/red/new.jpg", (images / files[3]).read_bytes())     # new
    out = run_cli("extract", "s3://bucket/photos", "--cache", cache, *ARGS)
    assert "wrote 2, skipped 16" in out.stdout and "1 cached rows have no file" in out.stdout


def test_storage_that_stops_mid_run_keeps_the_committed_rows_and_the_rerun_finishes(reference, tmp_path, s3,
                                                                                     monkeypatch):
    from cnncodes.extract.sources import remote
    fs, restart, servers = s3
    images, folder_cache = reference
    for rel in image_files(images):
        fs.pipe(f"bucket/p/{rel}", (images / rel).read_bytes())
    reads, original = [], remote.read_url

    def read_then_stop(url):
        reads.append(url)
        if len(reads) == 9:
            servers[0].stop()  # the store goes away after eight images were read
        return original(url)
    monkeypatch.setattr(remote, "read_url", read_then_stop)
    monkeypatch.setattr(remote, "RETRIES", 2)
    cache = tmp_path / "stopped.h5"
    out = run_cli("extract", "s3://bucket/p", "--cache", cache, *ARGS, "--shard-rows", "4", check=False)
    assert out.returncode == 2 and "the storage did not answer after 2 tries" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    with open_cache(str(cache)) as c:
        assert len(c) == 8 and not c.failures  # two shards of four committed; nothing recorded as failed
    monkeypatch.setattr(remote, "read_url", original)
    restart()
    out = run_cli("extract", "s3://bucket/p", "--cache", cache, *ARGS, "--shard-rows", "4")
    assert "wrote 10, skipped 8" in out.stdout
    assert_same_rows(folder_cache, cache)


@pytest.mark.ray
def test_ray_workers_read_object_storage_themselves(reference, tmp_path, s3):
    """--engine ray from s3://: the workers fetch the objects, no folder is shared with them."""
    pytest.importorskip("ray")
    fs, _, _ = s3
    images, folder_cache = reference
    for rel in image_files(images):
        fs.pipe(f"bucket/ray/{rel}", (images / rel).read_bytes())
    cache = tmp_path / "ray.h5"
    out = run_cli("extract", "s3://bucket/ray", "--cache", cache, *ARGS, "--engine", "ray", "--shard-rows", "8")
    assert "wrote 18" in out.stdout
    assert_same_rows(folder_cache, cache)


def test_a_manifest_not_in_utf8_is_one_line_and_writes_nothing(reference, tmp_path):
    images, _ = reference
    manifest = tmp_path / "latin1.csv"
    rel = image_files(images)[0]
    manifest.write_bytes(f"path,label\n{images / rel},red\nfleur-\xe9.jpg,red\n".encode("latin-1"))
    cache = tmp_path / "m.h5"
    out = run_cli("extract", manifest, "--cache", cache, *ARGS, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().count("\n") == 0 and "latin1.csv: line 3 is not UTF-8" in out.stderr
    assert "save the manifest as UTF-8" in out.stderr and not cache.exists()
