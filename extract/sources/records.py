"""What every source yields: plain records of images (where their bytes are, their class and
split, their stat data), and the vocabulary of the folder layouts. No I/O here."""
from dataclasses import dataclass, field

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# Split folder names accepted in the layout root/<split>/<class>/<image>, and what they mean.
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class Record:
    path: str          # the row's identity in the cache: relative to the source, forward slashes
    abspath: str       # the file holding the bytes (for a tar member: its shard)
    label: str         # class name, or None (unlabeled)
    split: str = None  # from the folder layout or manifest, or None to derive from the content key
    stat: tuple = (0, 0, 0)  # (size, mtime_ns, inode) seen by the walk
    known: object = None     # what the cache holds for this path (cache.Known), when re-reading it
    member: tuple = None     # where in ``abspath``: a tar member's (offset, size), or ("parquet", row group, row)


@dataclass
class Scan:
    records: list
    ignored: list      # non-image files seen and left alone
    split_layout: bool
    failures: list = field(default_factory=list)  # (path, reason): entries of the source that name no image
    # False when the source says nothing about labels (a manifest without a label column): a re-run
    # then keeps the labels cached rows have, rather than reading the silence as "unlabeled".
    states_labels: bool = True
    # False for a manifest: it lists the photos it is about, so a cached row it does not list may
    # still have its file (another manifest's, or select's next.csv): "not listed", never "gone".
    lists_everything: bool = True


def file_stat(st) -> tuple:
    return (int(st.st_size), int(st.st_mtime_ns), int(st.st_ino))
