"""Finding images, their classes and splits. Yields plain records; opens no image.

The walk stats every file (size, mtime in ns, inode): that is what a re-run compares with the
cache before deciding to read a file, as git's index does.
"""
import hashlib
import os
import stat as stat_module
from dataclasses import dataclass

from .errors import ExtractError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# Split folder names accepted in the layout root/<split>/<class>/<image>, and what they mean.
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class Record:
    path: str          # relative to the data root, with forward slashes
    abspath: str
    label: str         # class name
    split: str = None  # from the folder layout, or None to derive from the content key
    stat: tuple = (0, 0, 0)  # (size, mtime_ns, inode) seen by the walk
    known: object = None     # what the cache holds for this path (cache.Known), when re-reading it


@dataclass
class Scan:
    records: list
    ignored: list      # non-image files seen and left alone
    split_layout: bool


def _visible(name: str) -> bool:
    return not name.startswith(".") and not name.startswith("__")


def file_stat(st) -> tuple:
    return (int(st.st_size), int(st.st_mtime_ns), int(st.st_ino))


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
    """Records of root/<class>/<image>, or of root/{train,val,test}/<class>/<image>."""
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise ExtractError(f"{root}: no such folder; pass a folder laid out as root/<class>/<image>")
    top = sorted(d for d in os.listdir(root) if _visible(d) and os.path.isdir(os.path.join(root, d)))
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
