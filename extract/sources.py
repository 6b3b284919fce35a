"""Finding images, their classes and splits. Yields plain records; opens no image."""
import hashlib
import os
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
    key: str = None    # SHA-256 of the file's bytes


@dataclass
class Scan:
    records: list
    ignored: list      # non-image files seen and left alone
    split_layout: bool


def _visible(name: str) -> bool:
    return not name.startswith(".") and not name.startswith("__")


def walk_images(top, ignored):
    """Image files under top (recursively, sorted), skipping hidden files and folders."""
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        for name in sorted(filenames):
            if not _visible(name):
                continue
            full = os.path.join(dirpath, name)
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                yield full
            else:
                ignored.append(full)


def scan_image_folder(root) -> Scan:
    """Records of root/<class>/<image>, or of root/{train,val,test}/<class>/<image>."""
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise ExtractError(f"{root}: no such folder; pass a folder laid out as root/<class>/<image>")
    top = sorted(d for d in os.listdir(root) if _visible(d) and os.path.isdir(os.path.join(root, d)))
    split_layout = bool(top) and all(d.lower() in SPLIT_FOLDERS for d in top)
    ignored, records = [], []
    groups = [(os.path.join(root, d), SPLIT_FOLDERS[d.lower()]) for d in top] if split_layout else [(root, None)]
    for group_dir, split in groups:
        for cls in sorted(d for d in os.listdir(group_dir) if _visible(d)):
            cls_dir = os.path.join(group_dir, cls)
            if not os.path.isdir(cls_dir):
                ignored.append(cls_dir)
                continue
            for full in walk_images(cls_dir, ignored):
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                records.append(Record(path=rel, abspath=full, label=cls, split=split))
    if not records:
        raise ExtractError(
            f"{root}: no images found; expected root/<class>/<image> or root/{{train,val,test}}/<class>/<image> "
            f"with extensions {', '.join(sorted(IMAGE_EXTENSIONS))}")
    return Scan(records=records, ignored=ignored, split_layout=split_layout)


def content_key(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def derive_split(key: str, seed: int = 0, fractions=DEFAULT_SPLIT_FRACTIONS) -> str:
    """train/val/test from the content key alone, so a row's split never moves when images are added.

    Each class gets about the given fractions in expectation (every file draws independently).
    """
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    train, val = fractions[0], fractions[0] + fractions[1]
    return "train" if u < train else "val" if u < val else "test"


def with_keys_and_splits(records, seed=0, fractions=DEFAULT_SPLIT_FRACTIONS):
    """Records with their content key and split filled in (unreadable files get key '')."""
    out = []
    for r in records:
        try:
            key = content_key(r.abspath)
        except OSError:
            key = ""  # the decoder records why it cannot be read
        split = r.split or derive_split(key, seed, fractions)
        out.append(Record(r.path, r.abspath, r.label, split, key))
    return out
