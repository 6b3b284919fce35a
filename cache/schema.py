"""Names and types of the cache file. docs/cache-format.md documents the same layout for other tools.

Schema 2: the cache file holds small tables (attributes, class names, failures, the segment
list) and virtual datasets whose rows live in immutable segment files in ``<cache>.shards/``;
plain h5py reads the virtual datasets like any other. Schema 1 (one file with every row inside)
is still read, and upgraded on the next extract.
"""
import json

import h5py
import numpy as np

SCHEMA_VERSION = 2

STR = h5py.string_dtype("utf-8")
KEY_DTYPE = np.dtype("S64")    # SHA-256 hex of the image file's bytes
SPLIT_DTYPE = np.dtype("S5")   # train, val, test
STAT_COLUMNS = ("size", "mtime_ns", "inode")  # what a re-run compares before reading a file

LABELS = "labels"
# The label of an unlabeled image (a flat folder, a manifest without labels). -1 is the virtual
# datasets' fill for a row whose segment is missing (manifest.missing_row_fill): never data.
UNLABELED = -2
CLASS_NAMES = "class_names"
CODES_GROUP = "codes"
FAILED_GROUP = "failed"
FAILED_FIELDS = ("paths", "keys", "reasons")
STAT = "stat"
SEGMENTS_GROUP = "segments"

# Per-row datasets beside /codes/<layer>: name -> dtype (None: variable-length UTF-8).
ROW_FIELDS = {"labels": np.dtype(np.int32), "paths": STR, "keys": KEY_DTYPE, "splits": SPLIT_DTYPE,
              STAT: np.dtype(np.int64)}

# Caches made with augmented views (extract --views K) also hold /views: per row, 0 for an image's
# centre view, 1..K for its augmented views, stored right after the centre row.
VIEWS = "views"
VIEW_DTYPE = np.dtype(np.uint8)

# Attributes stored as JSON objects.
JSON_ATTRS = ("preprocess", "quantization", "split_policy", "widths", "views", "map_shapes")

# Rows per HDF5 chunk of /codes/<layer>: a few MB per chunk, so reading a layer streams.
CODE_CHUNK_ROWS = 256


def encode_attr(value):
    """Attributes are stored as plain strings (lists as string arrays, dicts as JSON)."""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, (list, tuple)):
        return np.array([str(v) for v in value], dtype=STR)
    if isinstance(value, str):
        return str(value)  # plain str: subclasses such as torch's version string confuse h5py
    return value


def text(value) -> str:
    """One stored string (bytes in fixed-width datasets, str in variable-length ones) as str."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def class_of(labels, class_names) -> list:
    """Each label's class name, None for an unlabeled row."""
    return [class_names[int(i)] if i >= 0 else None for i in labels]


def image_of_rows(views) -> np.ndarray:
    """Each row's image number: the rank of its centre row (view 0), which its augmented views follow."""
    return np.cumsum(np.asarray(views) == 0) - 1


def decode_attr(value):
    if isinstance(value, bytes):
        return text(value)
    if isinstance(value, np.ndarray):
        return [text(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_attrs(h5file) -> dict:
    attrs = {k: decode_attr(v) for k, v in h5file.attrs.items()}
    for key in JSON_ATTRS:
        if isinstance(attrs.get(key), str) and attrs[key][:1] in "{[":
            attrs[key] = json.loads(attrs[key])
    return attrs


def write_attrs(h5file, attrs: dict) -> None:
    for key, value in attrs.items():
        if value is not None:
            h5file.attrs[key] = encode_attr(value)


def read_strings(dataset) -> list:
    return [text(s) for s in dataset[()]]


def read_failures(group) -> list:
    """[(path, key, reason, stat)] of a failure table (a cache file's, a segment's, a schema-1
    file's); stat (0, 0, 0), never a real file's, where the table predates stat data."""
    columns = [read_strings(group[name]) for name in FAILED_FIELDS]
    if STAT in group:
        stats = [tuple(int(v) for v in s) for s in group[STAT][()]]
    else:
        stats = [(0,) * len(STAT_COLUMNS)] * len(columns[0])
    return list(zip(*columns, stats))


def as_text(array) -> np.ndarray:
    """Fixed-width bytes (schema 2) or variable-length strings (schema 1) as a numpy str array."""
    array = np.asarray(array)
    if array.dtype.kind == "S":
        return array.astype(str)
    return np.array([text(s) for s in array], dtype=str)
