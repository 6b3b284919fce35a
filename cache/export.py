"""`export`: a cache's codes and metadata as Parquet, or as codes.npy + metadata.parquet.

Parquet: one row per cache row, columns path, label (class name), split, key, view (0: the
image's centre view, 1..K: augmented views of `extract --views`) and code (a fixed-size list of float32), readable by pandas, DuckDB, Polars, Spark. npy: codes.npy [N, D]
plus metadata.parquet with the same columns but the code, in the same row order: the layout
embedding readers and autofaiss consume. Both stream in blocks, so memory stays bounded.
"""
import os

import numpy as np

from .errors import CacheError
from .reader import open_cache
from .schema import as_text, class_of, text

FORMATS = ("parquet", "npy")
BLOCK_ROWS = 32768


def _arrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CacheError("export needs pyarrow: pip install pyarrow") from None
    return pa, pq


def export_cache(cache_path, out, fmt="parquet", layer=None) -> dict:
    """Write the export; returns {"rows", "width", "files"}."""
    if fmt not in FORMATS:
        raise CacheError(f"format={fmt}: choose {' or '.join(FORMATS)}")
    pa, pq = _arrow()
    with open_cache(cache_path) as c:
        layer = layer or c.first_layer
        dset = c.dataset(layer)
        n, width = dset.shape
        names = list(c.class_names)
        if fmt == "parquet":
            files = [out]
            code_type = pa.list_(pa.float32(), width)
            schema = pa.schema([("path", pa.string()), ("label", pa.string()), ("split", pa.string()),
                                ("key", pa.string()), ("view", pa.uint8()), ("code", code_type)],
                               metadata={"cnncodes_layer": layer, "cnncodes_cache": os.path.abspath(cache_path)})
            codes_out = None
        else:
            os.makedirs(out, exist_ok=True)
            files = [os.path.join(out, "codes.npy"), os.path.join(out, "metadata.parquet")]
            schema = pa.schema([("path", pa.string()), ("label", pa.string()), ("split", pa.string()),
                                ("key", pa.string()), ("view", pa.uint8())], metadata={"cnncodes_layer": layer})
            codes_out = np.lib.format.open_memmap(files[0] + ".tmp", mode="w+", dtype=np.float32, shape=(n, width))
        table_path = files[0] if fmt == "parquet" else files[1]
        writer = pq.ParquetWriter(table_path + ".tmp", schema)
        try:
            paths_ds, keys_ds, splits_ds = c.raw("paths"), c.raw("keys"), c.raw("splits")
            for start in range(0, n, BLOCK_ROWS):
                stop = min(n, start + BLOCK_ROWS)
                codes = c.read_rows(dset, start, stop).astype(np.float32)  # checked: a damaged chunk is one line
                columns = {
                    "path": [text(p) for p in paths_ds[start:stop]],
                    "label": class_of(c.labels[start:stop], names),
                    "split": as_text(splits_ds[start:stop]).tolist(),
                    "key": as_text(keys_ds[start:stop]).tolist(),
                    "view": pa.array(c.views[start:stop], type=pa.uint8()),
                }
                if codes_out is None:
                    columns["code"] = pa.FixedSizeListArray.from_arrays(pa.array(codes.reshape(-1)), width)
                else:
                    codes_out[start:stop] = codes
                writer.write_table(pa.table(columns, schema=schema))
        finally:
            writer.close()
        if codes_out is not None:
            codes_out.flush()
            del codes_out
            os.replace(files[0] + ".tmp", files[0])
        os.replace(table_path + ".tmp", table_path)
    return {"rows": int(n), "width": int(width), "layer": layer, "files": files}
