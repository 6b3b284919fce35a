"""A folder of images: root/<class>/<image>, root/{train,val,test}/<class>/<image>, or images
with no labels; and the walk (sorted, hidden entries skipped, links followed once)."""
import os
import stat as stat_module

from ..errors import ExtractError
from .records import IMAGE_EXTENSIONS, SPLIT_FOLDERS, Record, Scan, file_stat


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
    # scandir: each entry's path joined in C (a million photos' os.path.join was seconds); names and
    # paths kept, not the entries (each holds its stat once asked: ~0.8 KB), and os.stat, which
    # gives the inode on every platform (a DirEntry's is 0 on Windows)
    try:
        with os.scandir(top) as listing:
            entries = sorted((e.name, e.path) for e in listing if _visible(e.name))
    except OSError:
        return
    subdirs = []
    for name, full in entries:
        try:
            st = os.stat(full)
        except OSError:  # a dangling link: nothing to read
            ignored.append(full)
            continue
        if stat_module.S_ISDIR(st.st_mode):
            subdirs.append(full)
        elif _extension(name) in IMAGE_EXTENSIONS:
            yield full, file_stat(st)
        else:
            ignored.append(full)
    for sub in subdirs:
        yield from walk_images(sub, ignored, visited)


def _extension(name) -> str:
    """os.path.splitext(name)[1].lower() for a visible file's name (no leading dot)."""
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def _relative(full, root, prefix) -> str:
    """A walked path under ``root`` (absolute, as the walk joined it; ``prefix``: root with its
    separator) relative to it, with '/': the prefix cut off (os.path.relpath normalises both paths
    each call: 2-3x the whole walk's time)."""
    rel = full[len(prefix):] if full.startswith(prefix) else os.path.relpath(full, root)
    return rel.replace(os.sep, "/") if os.sep != "/" else rel


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
    ignored, records, visited, prefix = [], [], set(), os.path.join(root, "")
    groups = [(os.path.join(root, d), SPLIT_FOLDERS[d.lower()]) for d in top] if split_layout else [(root, None)]
    for group_dir, split in groups:
        for cls in sorted(d for d in os.listdir(group_dir) if _visible(d)):
            cls_dir = os.path.join(group_dir, cls)
            if not os.path.isdir(cls_dir):
                ignored.append(cls_dir)
                continue
            for full, st in walk_images(cls_dir, ignored, visited):
                records.append(Record(path=_relative(full, root, prefix), abspath=full, label=cls, split=split,
                                      stat=st))
    if not records:
        raise ExtractError(
            f"{root}: no images found; expected root/<class>/<image> or root/{{train,val,test}}/<class>/<image> "
            f"with extensions {', '.join(sorted(IMAGE_EXTENSIONS))}")
    return Scan(records=records, ignored=ignored, split_layout=split_layout)


def _unlabeled_folder(root) -> Scan:
    ignored = []
    prefix = os.path.join(root, "")
    records = [Record(path=_relative(full, root, prefix), abspath=full, label=None, stat=st)
               for full, st in walk_images(root, ignored)]
    if not records:
        raise ExtractError(f"{root}: no images found; expected root/<class>/<image>, "
                           f"root/{{train,val,test}}/<class>/<image> or images directly in the folder, "
                           f"with extensions {', '.join(sorted(IMAGE_EXTENSIONS))}")
    return Scan(records=records, ignored=ignored, split_layout=False)


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
