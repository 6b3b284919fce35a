"""Finding images, their classes and splits. Yields plain records; opens no image.

The walk stats every file (size, mtime in ns, inode): that is what a re-run compares with the
cache before deciding to read a file, as git's index does. A source is a folder (this module), a
manifest (manifests.py) or tar shards (tar_shards.py); ``scan_source`` tells which from the
argument, and every one yields the same Records.
"""
import hashlib
import os
import stat as stat_module

from .errors import ExtractError
from .records import (DEFAULT_SPLIT_FRACTIONS, IMAGE_EXTENSIONS, SPLIT_FOLDERS, Record, Scan,  # noqa: F401
                      file_stat)

def source_location(data) -> str:
    """Where a source lives, as the cache records it: an absolute path, or a URL as given."""
    data = os.fspath(data)
    return data if "://" in data else os.path.abspath(data)


def read_bytes(record) -> bytes:
    """The record's image bytes: the whole file, or a tar member's slice of its shard (a shard cut
    short is an OSError, as an unreadable file is)."""
    member = getattr(record, "member", None)  # any object with .abspath is a plain file
    if "://" in record.abspath:  # object storage or a URL (remote.py)
        from .remote import read_url
        return read_url(record.abspath)
    if member is not None and member[0] == "parquet":
        from .manifests import parquet_image_bytes
        return parquet_image_bytes(record.abspath, *member[1:])
    with open(record.abspath, "rb") as f:
        if member is None:
            return f.read()
        offset, size = member
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise OSError(f"the shard ends {size - len(data)} bytes into this member (truncated)")
    return data


def scan_source(data) -> Scan:
    """Records of whatever ``data`` names: a folder (class folders, split folders, or a flat
    folder of unlabeled images), a manifest (.csv, .parquet), or tar shards (a .tar file or a
    brace pattern such as data-{000000..000099}.tar), or a URL prefix in object storage (s3://...)."""
    data = os.fspath(data)
    lower = data.lower()
    if "://" in data and not lower.endswith((".csv", ".parquet")):
        from .remote import scan_remote
        return scan_remote(data)
    if lower.endswith((".csv", ".parquet")):
        from .manifests import scan_manifest
        return scan_manifest(data)
    if lower.endswith(".tar") or ("{" in data and ".." in data):
        from .tar_shards import scan_tar_shards
        return scan_tar_shards(data)
    return scan_image_folder(data)


def _visible(name: str) -> bool:
    return not name.startswith(".") and not name.startswith("__")


def walk_images(top, ignored, visited=None):
    """(path, stat) of image files under top (recursively, sorted), skipping hidden files and folders.

    Links are followed, but each real folder is entered once (remembered by device and inode),
    so a link back to a parent neither repeats images nor loops.
    """
    visited = set() if visited is None else visited
    try:
        st = os.stat(top)
    except OSError:
        return
    if (st.st_dev, st.st_ino) in visited:
        return
    visited.add((st.st_dev, st.st_ino))
    try:
        names = sorted(n for n in os.listdir(top) if _visible(n))
    except OSError:
        return
    subdirs = []
    for name in names:
        full = os.path.join(top, name)
        try:
            st = os.stat(full)
        except OSError:  # a dangling link: nothing to read
            ignored.append(full)
            continue
        if stat_module.S_ISDIR(st.st_mode):
            subdirs.append(full)
        elif os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
            yield full, file_stat(st)
        else:
            ignored.append(full)
    for sub in subdirs:
        yield from walk_images(sub, ignored, visited)


def scan_image_folder(root) -> Scan:
    """Records of root/<class>/<image>, of root/{train,val,test}/<class>/<image>, or (a folder
    with images and no subfolders) of unlabeled root/<image>."""
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise ExtractError(f"{root}: no such folder or source; pass a folder (root/<class>/<image>, or images "
                           "without labels), a manifest (.csv, .parquet) or tar shards (.tar, data-{000..009}.tar)")
    top = sorted(d for d in os.listdir(root) if _visible(d) and os.path.isdir(os.path.join(root, d)))
    if not top:
        return _unlabeled_folder(root)
    split_layout = bool(top) and all(d.lower() in SPLIT_FOLDERS for d in top)
    ignored, records, visited = [], [], set()
    groups = [(os.path.join(root, d), SPLIT_FOLDERS[d.lower()]) for d in top] if split_layout else [(root, None)]
    for group_dir, split in groups:
        for cls in sorted(d for d in os.listdir(group_dir) if _visible(d)):
            cls_dir = os.path.join(group_dir, cls)
            if not os.path.isdir(cls_dir):
                ignored.append(cls_dir)
                continue
            for full, st in walk_images(cls_dir, ignored, visited):
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                records.append(Record(path=rel, abspath=full, label=cls, split=split, stat=st))
    if not records:
        raise ExtractError(
            f"{root}: no images found; expected root/<class>/<image> or root/{{train,val,test}}/<class>/<image> "
            f"with extensions {', '.join(sorted(IMAGE_EXTENSIONS))}")
    return Scan(records=records, ignored=ignored, split_layout=split_layout)


def _unlabeled_folder(root) -> Scan:
    ignored = []
    records = [Record(path=os.path.relpath(full, root).replace(os.sep, "/"), abspath=full, label=None, stat=st)
               for full, st in walk_images(root, ignored)]
    if not records:
        raise ExtractError(f"{root}: no images found; expected root/<class>/<image>, "
                           f"root/{{train,val,test}}/<class>/<image> or images directly in the folder, "
                           f"with extensions {', '.join(sorted(IMAGE_EXTENSIONS))}")
    return Scan(records=records, ignored=ignored, split_layout=False)


def derive_split(key: str, seed: int = 0, fractions=DEFAULT_SPLIT_FRACTIONS) -> str:
    """train/val/test from the content key alone, so a row's split never moves when images are added.

    Each class gets about the given fractions in expectation (every file draws independently).
    """
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    train, val = fractions[0], fractions[0] + fractions[1]
    return "train" if u < train else "val" if u < val else "test"


def split_of(record, key: str, seed: int = 0, fractions=DEFAULT_SPLIT_FRACTIONS) -> str:
    """A record's split: its folder's, or else derived from its content key."""
    return getattr(record, "split", None) or derive_split(key, seed, fractions)


def expand_image_paths(inputs) -> list:
    """Files as given, folders searched recursively for images (sorted); hidden files skipped."""
    paths = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            paths += [p for p, _ in walk_images(item, [])]
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise ExtractError(f"{item}: no such file or folder; pass image files or folders of images")
    return paths


def source_hasher(data):
    """rel path -> SHA-256 hex of that image's bytes in the source ``data`` (verify --images on a
    manifest, tar shards or a URL prefix); FileNotFoundError for a path the source no longer has.
    None when the source itself cannot be read (not there, say)."""
    try:
        by_path = {r.path: r for r in scan_source(data).records}
    except ExtractError:
        return None

    def digest(rel):
        if rel not in by_path:
            raise FileNotFoundError(rel)
        return hashlib.sha256(read_bytes(by_path[rel])).hexdigest()
    return digest
