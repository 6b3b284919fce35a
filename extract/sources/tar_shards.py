"""Tar shards as a source (the WebDataset convention that img2dataset writes): members named
``KEY.jpg`` (any image extension) with an optional ``KEY.cls`` (the class, as text) or
``KEY.json`` (its "label", "class" or "cls"), in shards named one by one or by a brace pattern
such as ``data-{000000..000099}.tar``.

Nothing is extracted to disk: the listing keeps each member's offset and size, and a decoding
worker reads that slice of the shard. A member's row is ``SHARD/MEMBER`` (the shard's name as
given, relative to the pattern's folder); its stat is the shard's (size of the member, the
shard's mtime and inode), so a re-run reads nothing from shards that did not change. A member cut
off by a truncated shard is a recorded failure; the members before it are still read.
"""
import json
import os
import re
import tarfile

from ..errors import ExtractError
from .records import IMAGE_EXTENSIONS, Record, Scan

_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_CHOICES = re.compile(r"\{([^{}]*,[^{}]*)\}")


def expand_braces(pattern: str) -> list:
    """``a-{00..02}.tar`` -> a-00.tar, a-01.tar, a-02.tar (zero padding kept); ``{x,y}`` -> x, y.
    (The two forms WebDataset's shard lists use; nested braces are not.)"""
    found = [m for m in (_RANGE.search(pattern), _CHOICES.search(pattern)) if m is not None]
    if not found:
        return [pattern]
    match = min(found, key=lambda m: m.start())  # the leftmost brace varies slowest, as in a shell
    head, tail = pattern[:match.start()], pattern[match.end():]
    if match.re is _RANGE:
        first, last = match.group(1), match.group(2)
        width = len(first) if first.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(first), int(last) + 1)]
    else:
        items = match.group(1).split(",")
    return [out for item in items for out in expand_braces(head + item + tail)]


def _label(tar, info) -> str:
    data = tar.extractfile(info).read()
    if info.name.endswith(".cls"):
        return data.decode("utf-8").strip() or None
    meta = json.loads(data)
    for key in ("label", "class", "cls"):
        if isinstance(meta, dict) and meta.get(key) not in (None, ""):
            return str(meta[key])
    return None


def scan_tar_shards(pattern) -> Scan:
    pattern = os.fspath(pattern)
    shards = expand_braces(pattern)
    base = os.path.dirname(os.path.abspath(shards[0]))
    records, failures, missing = [], [], []
    for shard in shards:
        full = os.path.abspath(shard)
        try:
            st = os.stat(full)
        except OSError:
            missing.append(shard)
            continue
        records_before = len(records)
        name = os.path.relpath(full, base).replace(os.sep, "/")
        images, labels, truncated = {}, {}, False
        try:
            with tarfile.open(full, "r:") as tar:
                for info in _members(tar):
                    key, ext = os.path.splitext(info.name)
                    if ext.lower() in IMAGE_EXTENSIONS:
                        images[key] = info
                    elif ext in (".cls", ".json"):
                        try:
                            labels[key] = _label(tar, info)
                        except (ValueError, UnicodeDecodeError, tarfile.TarError, OSError):
                            labels[key] = None
                # tarfile ends a listing quietly at a header cut short: a well-formed shard has only
                # zero blocks after its last member.
                truncated = _dirty_tail(full, tar.offset)
        except _Truncated:
            truncated = True
        except tarfile.TarError as exc:
            failures.append((name, f"not a readable tar shard ({exc})"))
            continue
        cut = 0
        for key, info in images.items():
            if info.offset_data + info.size > st.st_size:  # listed, but its bytes are cut off
                failures.append((f"{name}/{info.name}", "truncated: the shard ends inside this member"))
                cut += 1
                continue
            records.append(Record(path=f"{name}/{info.name}", abspath=full, label=labels.get(key),
                                  stat=(int(info.size), int(st.st_mtime_ns), int(st.st_ino)),
                                  member=(int(info.offset_data), int(info.size))))
        if truncated and not cut:  # cut inside a header: the member it began is not even named
            failures.append((f"{name}/<after {len(images)} images>", "truncated: the shard ends inside a member's "
                                                                        "header; the members before it are read"))
        if len(records) == records_before and not truncated and not images:
            failures.append((name, "no image members"))
    if missing and len(missing) == len(shards):
        raise ExtractError(f"{pattern}: no such shard ({missing[0]}{' ...' if len(missing) > 1 else ''}); pass a "
                           "folder, a manifest, a .tar file or a brace pattern such as data-{000000..000009}.tar")
    failures += [(os.path.relpath(os.path.abspath(m), base).replace(os.sep, "/"), "no such shard") for m in missing]
    return Scan(records=records, ignored=[], split_layout=False, failures=failures)


class _Truncated(Exception):
    pass


def _members(tar):
    """The shard's regular members, in order; a shard cut short inside a header ends the listing
    with _Truncated, after the members before it."""
    while True:
        try:
            info = tar.next()
        except (tarfile.ReadError, EOFError, OSError):
            raise _Truncated() from None
        if info is None:
            return
        if info.isreg():
            yield info


def _dirty_tail(path, offset) -> bool:
    """Bytes after the listing's end that are not the end-of-archive zero blocks."""
    with open(path, "rb") as f:
        f.seek(offset)
        return any(f.read(512 * 20))
