import os
from collections import Counter

import pytest

from conftest import make_folder, make_image
from cnncodes.extract.errors import ExtractError
from cnncodes.cache._files import file_sha256 as content_key
from cnncodes.extract.sources import derive_split, scan_image_folder


def test_class_folders_hidden_and_non_images(tmp_path):
    make_folder(str(tmp_path), per_class=2)
    (tmp_path / "red" / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / ".git").mkdir()
    (tmp_path / "red" / "notes.txt").write_text("hello")
    (tmp_path / "loose.jpg").write_bytes(b"x")  # not inside a class folder
    scan = scan_image_folder(tmp_path)
    assert not scan.split_layout
    assert sorted({r.label for r in scan.records}) == ["blue", "green", "red"]
    assert len(scan.records) == 6
    assert all(r.split is None for r in scan.records)
    assert any(p.endswith("notes.txt") for p in scan.ignored)
    assert all(not os.path.basename(r.path).startswith(".") for r in scan.records)


def test_paths_are_relative_to_the_root_however_it_is_given(tmp_path, monkeypatch):
    """The scan cuts the root's prefix off each walked path (no os.path.relpath per photo): a root
    given relative, with a trailing slash or through '..', gives the same paths; extensions match
    in any case, and a name with no extension or a bare dot is not an image."""
    for folder in ("red/deep/er", "blue"):
        (tmp_path / "photos" / folder).mkdir(parents=True)
    for name in ("red/a.JPG", "red/deep/er/b.jpeg", "blue/c.png", "blue/noext", "blue/d.", "blue/e.jpg.txt"):
        (tmp_path / "photos" / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    expected = ["blue/c.png", "red/a.JPG", "red/deep/er/b.jpeg"]
    for root in (tmp_path / "photos", "photos", "photos/", "./photos/red/../", str(tmp_path / "photos") + "/"):
        scan = scan_image_folder(root)
        assert sorted(r.path for r in scan.records) == expected, root
        assert all(r.abspath == os.path.join(str(tmp_path / "photos"), r.path) for r in scan.records)
        assert sorted(os.path.basename(p) for p in scan.ignored) == ["d.", "e.jpg.txt", "noext"]


def test_split_folders_are_kept(tmp_path):
    make_folder(str(tmp_path), per_class=2, split="train")
    make_folder(str(tmp_path), per_class=1, split="val")
    make_folder(str(tmp_path), per_class=1, split="test")
    scan = scan_image_folder(tmp_path)
    assert scan.split_layout
    assert Counter(r.split for r in scan.records) == {"train": 6, "val": 3, "test": 3}
    assert all(r.path.split("/")[0] == r.split for r in scan.records)


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ExtractError, match="no such folder"):
        scan_image_folder(tmp_path / "nope")
    (tmp_path / "cls").mkdir()
    with pytest.raises(ExtractError, match="no images found"):
        scan_image_folder(tmp_path)


def test_derived_splits_are_stable_and_near_80_10_10():
    keys = [f"{i:064x}" for i in range(5000)]
    splits = [derive_split(k) for k in keys]
    counts = Counter(splits)
    assert 0.77 < counts["train"] / 5000 < 0.83
    assert 0.08 < counts["val"] / 5000 < 0.12
    assert 0.08 < counts["test"] / 5000 < 0.12
    assert splits == [derive_split(k) for k in keys]
    assert splits != [derive_split(k, seed=1) for k in keys]


def test_adding_images_never_moves_old_ones(tmp_path):
    make_folder(str(tmp_path), per_class=10)
    before = {r.path: derive_split(content_key(r.abspath)) for r in scan_image_folder(tmp_path).records}
    make_folder(str(tmp_path), per_class=10, start=10)
    after = {r.path: derive_split(content_key(r.abspath)) for r in scan_image_folder(tmp_path).records}
    assert len(after) == 60
    assert all(after[p] == s for p, s in before.items())


def test_content_key_is_hash_of_bytes(tmp_path):
    a = make_image(str(tmp_path / "c" / "a.png"), seed=1)
    b = str(tmp_path / "c" / "b.png")
    with open(a, "rb") as src, open(b, "wb") as dst:
        dst.write(src.read())
    keys = [content_key(r.abspath) for r in scan_image_folder(tmp_path).records]
    assert keys[0] == keys[1] and len(keys[0]) == 64


def test_walk_records_stat_and_survives_looping_links(tmp_path):
    make_folder(str(tmp_path), per_class=2, classes=("red",))
    os.makedirs(tmp_path / "red" / "sub")
    make_image(str(tmp_path / "red" / "sub" / "x.jpg"), seed=5)
    for name in ("up1", "up2", "up3"):  # three links to parents: the paths would multiply
        os.symlink("..", tmp_path / "red" / "sub" / name)
    os.symlink(str(tmp_path / "red"), tmp_path / "red" / "sub" / "again")
    outside = tmp_path.parent / (tmp_path.name + "-elsewhere")
    make_image(str(outside / "y.jpg"), seed=6)
    os.symlink(str(outside), tmp_path / "red" / "linked")  # a folder elsewhere still counts
    records = scan_image_folder(tmp_path).records
    assert sorted(r.path for r in records) == ["red/0000.jpg", "red/0001.jpg", "red/linked/y.jpg", "red/sub/x.jpg"]
    st = os.stat(tmp_path / "red" / "0000.jpg")
    assert records[0].stat == (st.st_size, st.st_mtime_ns, st.st_ino)
