"""Object storage and URLs as a source, through fsspec (``s3://``, ``gs://``, ``https://``, ...).

A URL prefix is read like a folder (PREFIX/<class>/<image>, PREFIX/{train,val,test}/<class>/<image>,
or images directly under it, unlabeled). The listing gives each object's size and ETag (or its
modification time) in place of stat data, so a re-run reads only new or changed objects. The
decoding workers (and Ray's, with no shared folder) fetch the bytes themselves, with a timeout
and retries. Credentials and endpoints come from the library's usual configuration (for S3:
the AWS environment variables or config files, e.g. AWS_ENDPOINT_URL), never the command line.
An object gone since the listing is a recorded failure; storage that stops answering stops the
run in one line (every committed row stays; the same command goes on from there).
"""
import time

from ..errors import ExtractError
from .records import IMAGE_EXTENSIONS, SPLIT_FOLDERS, Record, Scan

RETRIES = 3
TIMEOUT_SECONDS = 30
# Per protocol: how fsspec's implementation takes a timeout (s3fs through botocore's config).
_TIMEOUT_OPTIONS = {
    "s3": {"config_kwargs": {"connect_timeout": TIMEOUT_SECONDS, "read_timeout": TIMEOUT_SECONDS,
                             "retries": {"max_attempts": 1}}},
}


class StorageUnavailable(ExtractError):
    """The object store did not answer within the retries: nothing is recorded for the image."""


def _filesystem(url):
    import fsspec
    from fsspec.core import split_protocol
    protocol = split_protocol(url)[0] or "file"
    try:
        return fsspec.core.url_to_fs(url, **_TIMEOUT_OPTIONS.get(protocol, {}))
    except ImportError as exc:
        raise ExtractError(f"{url}: reading {protocol}:// needs fsspec's {protocol} support ({exc}); "
                           "pip install 'cnncodes[remote]'") from None


def _stat(info) -> tuple:
    """(size, a number that changes when the object does, 0): the ETag where the store gives one,
    else the modification time in ns."""
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    if etag:
        try:
            change = int(etag.split("-")[0][:15], 16)
        except ValueError:
            change = hash(etag) & ((1 << 62) - 1)
    else:
        modified = info.get("LastModified") or info.get("mtime") or info.get("last_modified") or 0
        change = int(modified.timestamp() * 1e9) if hasattr(modified, "timestamp") else int(float(modified) * 1e9)
    return (int(info.get("size") or info.get("Size") or 0), change, 0)


def stat_url(url) -> tuple:
    """The stat of one object (a manifest's URL row); FileNotFoundError when it is not there."""
    fs, path = _filesystem(url)
    fs.invalidate_cache(path)
    return _stat(fs.info(path))


def scan_remote(url) -> Scan:
    fs, root = _filesystem(url)
    root = root.rstrip("/")
    fs.invalidate_cache()  # a listing cached earlier in this process would hide changed objects
    try:
        entries = fs.find(root, detail=True)
    except FileNotFoundError:
        entries = {}
    except Exception as exc:  # the store refused or did not answer: one line, before any work
        raise ExtractError(f"{url}: cannot list the objects ({type(exc).__name__}: {exc})") from None
    protocol = url.split("://", 1)[0]
    items = []
    for name, info in sorted(entries.items()):
        rel = name[len(root):].lstrip("/")
        parts = rel.split("/")
        if any(p.startswith((".", "__")) for p in parts) or info.get("type") == "directory":
            continue
        if "." + rel.rsplit(".", 1)[-1].lower() not in IMAGE_EXTENSIONS:
            continue
        items.append((rel, parts, f"{protocol}://{name}", _stat(info)))
    if not items:
        raise ExtractError(f"{url}: no images found under this prefix")
    split_layout = all(len(p) >= 3 and p[0].lower() in SPLIT_FOLDERS for _, p, _, _ in items)
    flat = all(len(p) == 1 for _, p, _, _ in items)
    records, ignored = [], []
    for rel, parts, full, st in items:
        if split_layout:
            label, split = parts[1], SPLIT_FOLDERS[parts[0].lower()]
        elif flat:
            label, split = None, None
        elif len(parts) >= 2:
            label, split = parts[0], None
        else:  # a loose object beside class folders, as a loose file in a folder: left alone
            ignored.append(full)
            continue
        records.append(Record(path=rel, abspath=full, label=label, split=split, stat=st))
    return Scan(records=records, ignored=ignored, split_layout=split_layout)


def read_url(url) -> bytes:
    """An object's bytes, with RETRIES tries; FileNotFoundError for an object that is gone,
    StorageUnavailable when the store does not answer."""
    error = None
    for attempt in range(RETRIES):
        try:
            fs, path = _filesystem(url)
            return fs.cat_file(path)  # one GET of the current object (not pinned to a listed ETag)
        except FileNotFoundError:
            raise
        except Exception as exc:  # connection refused, timeouts, throttling: try again, then give up
            error = exc
            time.sleep(0.2 * 2 ** attempt)
    raise StorageUnavailable(f"{url}: the storage did not answer after {RETRIES} tries ({type(error).__name__}: "
                             f"{error}); every committed row is intact: re-run the same command to go on")
