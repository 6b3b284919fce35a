"""A manifest as a source: a CSV or Parquet table with a ``path`` column, and optionally ``label``
and ``split`` (train/val/test as the folder layout spells them; absent: content-key splits). A
Parquet file may hold the images themselves instead: an ``image`` column of encoded bytes, or of
structs with ``bytes`` (and ``path``), as Hugging Face ``datasets`` writes them; its rows are read
a row group at a time by the decoding workers, never unpacked to disk.

Relative paths are relative to the manifest's folder. A bad row (an empty path, a file that is
not there, a split word the layout does not know) becomes a recorded failure naming its row
number; it never stops the run. A path listed twice is refused in one line, since a row's
identity is its path.
"""
import csv
import os

from ..errors import ExtractError
from .records import SPLIT_FOLDERS, Record, Scan, file_stat

COLUMNS = ("path", "label", "split")


def read_table(manifest) -> tuple:
    """(rows as dicts of the known columns, missing ones None, in the file's order; the column names)."""
    if manifest.lower().endswith(".parquet"):
        import pyarrow.parquet as pq
        try:
            table = pq.read_table(manifest)
        except Exception as exc:
            raise ExtractError(f"{manifest}: not a readable Parquet file ({exc})") from None
        names = set(table.column_names)
        columns = {name: table.column(name).to_pylist() if name in names else [None] * table.num_rows
                   for name in COLUMNS}
        return [{name: columns[name][i] for name in COLUMNS} for i in range(table.num_rows)], names
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            names = set(reader.fieldnames or ())
            return [{name: row.get(name) for name in COLUMNS} for row in reader], names
    except UnicodeDecodeError as exc:  # guessing an encoding could name the wrong file: say so instead
        line = exc.object[:exc.start].count(b"\n") + 1
        raise ExtractError(f"{manifest}: line {line} is not UTF-8 (byte 0x{exc.object[exc.start]:02x}); save the "
                           "manifest as UTF-8 (e.g. iconv -f latin1 -t utf-8) and run again") from None


def scan_manifest(manifest) -> Scan:
    manifest = os.path.abspath(os.fspath(manifest))
    if not os.path.isfile(manifest):
        raise ExtractError(f"{manifest}: no such manifest")
    if manifest.lower().endswith(".parquet") and _has_image_column(manifest):
        return _scan_image_rows(manifest)
    rows, names = read_table(manifest)
    if "path" not in names:
        raise ExtractError(f"{manifest}: no 'path' column (it has {', '.join(sorted(names)) or 'none'}); "
                           "a manifest needs path, and optionally label and split")
    base, label_column = os.path.dirname(manifest), "label" in names
    records, failures, first_row = [], [], {}
    for number, row in enumerate(rows, start=2 if manifest.lower().endswith(".csv") else 1):
        where = f"{os.path.basename(manifest)} row {number}"  # CSV rows counted as a spreadsheet shows them
        path = str(row["path"] or "").strip()
        if not path:
            failures.append((where, "empty path"))
            continue
        path = path.replace(os.sep, "/")
        if path in first_row:
            raise ExtractError(f"{manifest}: {path} is listed twice (rows {first_row[path]} and {number}); "
                               "a row's identity is its path, so list each image once")
        first_row[path] = number
        split = str(row["split"] or "").strip().lower()
        if split and split not in SPLIT_FOLDERS:
            failures.append((path, f"{where}: unknown split {row['split']!r}; use train, val or test"))
            continue
        full = path if os.path.isabs(path) or "://" in path else os.path.join(base, path)
        try:
            st = _stat_of(full)
        except OSError:
            failures.append((path, f"{where}: no such file {full}"))
            continue
        label = row["label"] if label_column else None
        label = None if label is None or str(label).strip() == "" else str(label).strip()
        records.append(Record(path=path, abspath=full, label=label, split=SPLIT_FOLDERS.get(split), stat=st))
    if not records and not failures:
        raise ExtractError(f"{manifest}: the manifest lists no images")
    return Scan(records=records, ignored=[], split_layout=False, failures=failures, states_labels=label_column,
                lists_everything=False)


def _stat_of(full) -> tuple:
    """A row's stat data: the file's, or a URL's size and ETag (remote.py)."""
    if "://" in full:
        from .remote import stat_url
        return stat_url(full)
    return file_stat(os.stat(full))


def _has_image_column(manifest) -> bool:
    import pyarrow.parquet as pq
    try:
        return "image" in pq.read_schema(manifest).names
    except Exception as exc:
        raise ExtractError(f"{manifest}: not a readable Parquet file ({exc})") from None


def _scan_image_rows(manifest) -> Scan:
    """Rows of a Parquet file of images: ``FILE/ROW_KEY`` each (the ``key`` or ``id`` column, else
    the row number), read later by row group and index (Record.member). Its stat is the file's,
    so a re-run reads nothing from an unchanged file."""
    import pyarrow.parquet as pq
    f = pq.ParquetFile(manifest)
    names = set(f.schema_arrow.names)
    columns = [c for c in ("key", "id", "label", "split") if c in names]
    st = os.stat(manifest)
    base = os.path.basename(manifest)
    records, failures, seen, row = [], [], {}, 0
    for group in range(f.num_row_groups):
        table = f.read_row_group(group, columns=columns)
        values = {c: table.column(c).to_pylist() for c in columns}
        for i in range(table.num_rows):
            key = values.get("key", values.get("id", [None] * table.num_rows))[i]
            path = f"{base}/{key if key not in (None, '') else row}"
            if path in seen:
                raise ExtractError(f"{manifest}: row key {path.split('/', 1)[1]} appears twice (rows {seen[path]} and "
                                   f"{row}); a row's identity is its key")
            seen[path] = row
            split = str(values["split"][i] or "").strip().lower() if "split" in values else ""
            if split and split not in SPLIT_FOLDERS:
                failures.append((path, f"{base} row {row}: unknown split {values['split'][i]!r}; use train, val or test"))
            else:
                label = values["label"][i] if "label" in values else None
                label = None if label is None or str(label).strip() == "" else str(label).strip()
                records.append(Record(path=path, abspath=manifest, label=label, split=SPLIT_FOLDERS.get(split),
                                      stat=(0, int(st.st_mtime_ns), int(st.st_ino)), member=("parquet", group, i)))
            row += 1
    return Scan(records=records, ignored=[], split_layout=False, failures=failures, states_labels="label" in names)


_ROW_GROUP = {}  # (file, mtime, group) -> that row group's image cells: one group kept per process


def parquet_image_bytes(path, group, index) -> bytes:
    """The encoded image of one row of a Parquet file of images; the row group is read once for all
    its rows (a decoding worker gets consecutive rows)."""
    import pyarrow.parquet as pq
    cache_key = (path, os.stat(path).st_mtime_ns, group)
    if cache_key not in _ROW_GROUP:
        _ROW_GROUP.clear()
        _ROW_GROUP[cache_key] = pq.ParquetFile(path).read_row_group(group, columns=["image"]).column("image").to_pylist()
    cell = _ROW_GROUP[cache_key][index]
    if isinstance(cell, dict):  # datasets' Image feature: {"bytes": ..., "path": ...}
        data = cell.get("bytes")
        if data is None and cell.get("path"):
            with open(cell["path"], "rb") as image:
                data = image.read()
        cell = data
    if not cell:
        raise OSError("the row holds no image bytes")
    return bytes(cell)
