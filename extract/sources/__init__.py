"""Where images come from: a folder (folder.py), a manifest (.csv or .parquet: manifests.py), tar
shards (tar_shards.py) or object storage (remote.py). ``scan_source`` tells which from the
argument, and every one yields the same plain Records (records.py); none opens an image.

Every source stats its entries (size, mtime in ns, inode): that is what a re-run compares with the
cache before deciding to read a file, as git's index does.
"""
import hashlib
import os

from ..errors import ExtractError
from .folder import expand_image_paths, scan_image_folder, walk_images  # noqa: F401
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


def paths_folder(data_root) -> str:
    """The folder a cache's relative paths start from, given its recorded data root: a manifest's
    folder, or the folder itself ("" where none is recorded)."""
    root = data_root or ""
    return os.path.dirname(root) if os.path.isfile(root) else root


def read_and_hash(record) -> tuple:
    """(bytes, SHA-256 hex): the one read of an image (a file, or a tar member); the key is what
    identifies its content in a cache."""
    data = read_bytes(record)
    return data, hashlib.sha256(data).hexdigest()


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
        return read_and_hash(by_path[rel])[1]
    return digest
