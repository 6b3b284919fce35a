"""Names and attributes of the cache file. README.md documents the same layout for other tools."""
import json

import h5py
import numpy as np

SCHEMA_VERSION = 1

STR = h5py.string_dtype("utf-8")

# Per-row datasets (one entry per image that was extracted), beside /codes/<layer>.
ROW_STRING_FIELDS = ("paths", "keys", "splits")
LABELS = "labels"
CLASS_NAMES = "class_names"
CODES_GROUP = "codes"
FAILED_GROUP = "failed"
FAILED_FIELDS = ("paths", "keys", "reasons")

# Attributes that must match before codes may be appended to a cache: codes from another
# network, layer, weights, preprocessing, int8 calibration or storage type cannot share a matrix.
COMPARED_FINGERPRINT_KEYS = ("backbone", "layers", "weights", "preprocess", "quantization", "dtype")
# Attributes stored as JSON objects.
JSON_ATTRS = ("preprocess", "quantization")

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


def decode_attr(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_attrs(h5file) -> dict:
    attrs = {k: decode_attr(v) for k, v in h5file.attrs.items()}
    for key in JSON_ATTRS:
        if isinstance(attrs.get(key), str):
            attrs[key] = json.loads(attrs[key])
    return attrs


def write_attrs(h5file, attrs: dict) -> None:
    for key, value in attrs.items():
        h5file.attrs[key] = encode_attr(value)


def fingerprint_differences(existing: dict, new: dict) -> list:
    """Names of the compared fingerprint fields whose values differ."""
    return [k for k in COMPARED_FINGERPRINT_KEYS if _norm(existing.get(k)) != _norm(new.get(k))]


def describe_attr(value) -> str:
    """A fingerprint value as one short phrase for error messages."""
    if value is None:
        return "none"
    if isinstance(value, dict) and "calibration" in value:
        calibration = value["calibration"]
        return (f"int8 calibrated on {calibration['images']} images, {value.get('engine', 'x86')} engine "
                f"({calibration['keys_sha256'][:12]})")
    return repr(value)


def _norm(value):
    if isinstance(value, str) and value[:1] == "{":
        return json.loads(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def read_strings(dataset) -> list:
    return [s.decode("utf-8") if isinstance(s, bytes) else s for s in dataset[()]]
