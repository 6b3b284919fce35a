"""Damage at random, in each file a cache is made of: bits flipped, the file cut short, a page zeroed,
or the file swapped for the same file of another cache, at random offsets.

A cache here is the file, its live segments, segments retired while a reader was open, the write
lock, the readers' lease file and the folder's 'published' mark (tests/cache_world.py's
build_cache: views, failures, unlabeled rows, holes). Wanted, for every damage:
- readers (``open_cache``, every row's path, key, label, split, stat, view and codes, the failures,
  info) and stage two (``read_codes``: X, y, splits, paths) answer exactly as before, or refuse in
  one line (a CacheError): never a wrong label, split, path, key or code, never a traceback;
- ``verify`` names the damaged file whenever a reader refuses, and names no other file;
- extract into the damaged cache refuses in one line, or finishes: then the cache holds exactly
  what it must, or, where damage it cannot rebuild (codes) remains, still refuses in one line.

CI tries a dozen damages per file kind, the same every run; CNNCODES_LONG_PROPERTIES=1 a thousand, fresh
ones (CONTRIBUTING.md). Each trial runs in a forked process: HDF5 may crash on a damaged file, and a
crash is no refusal.
"""
import collections
import json
import os
import pickle
import shutil
import signal
import tempfile
import time
import traceback
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnncodes.cache import CacheError, open_for_append
from cnncodes.cache.verify import verify_cache

from cache_world import (LAYERS, NO_CACHE, Options, World, build_cache, differences, extract, fingerprint, ideal,
                         read_cache)

LONG = os.environ.get("CNNCODES_LONG_PROPERTIES") == "1"
TRIALS = int(os.environ.get("CNNCODES_DAMAGE_TRIALS", 1000 if LONG else 12))
FAST_TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
VIEWS, DTYPE = 2, "float16"
KINDS = ("main", "segment", "retired", "lock", "readers", "published")
PAGE = 4096


class Caches:
    """Two caches of one history with other photos (variant 0 is damaged, 1 lends files to swap in),
    and a trial folder the damaged copy lives in."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="cnncodes-damage-", dir=FAST_TMP)
        self.base = os.path.join(self.root, "base", "c.h5")
        self.other = os.path.join(self.root, "other", "c.h5")
        for path in (self.base, self.other):
            os.makedirs(os.path.dirname(path))
        self.world, self.state = build_cache(self.base, 0, VIEWS, DTYPE)
        build_cache(self.other, 1, VIEWS, DTYPE)
        self.trial = os.path.join(self.root, "trial", "c.h5")
        snap = read_cache(self.fresh())  # read where the damaged copies will be: info names the path
        assert not differences(snap, self.state, VIEWS, DTYPE)
        self.before = _comparable(snap)
        self.stage_two = stage_two(self.trial)

    def fresh(self) -> str:
        folder = os.path.dirname(self.trial)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(os.path.dirname(self.base), folder)
        return self.trial

    def files(self, cache, kind) -> list:
        from cnncodes.cache._manifest import read_manifest
        folder = f"{cache}.shards"
        if kind == "main":
            return [cache]
        if kind in ("lock", "readers", "published"):
            return [os.path.join(folder, kind)]
        listed = set(read_manifest(self.base).segments)  # the undamaged copy's list
        names = sorted(n for n in os.listdir(folder) if n.startswith("seg-") and n.endswith(".h5"))
        return [os.path.join(folder, n) for n in names if (n in listed) == (kind == "segment")]


@pytest.fixture(scope="module")
def caches():
    made = Caches()
    yield made
    shutil.rmtree(made.root, ignore_errors=True)


def stage_two(cache):
    """What stage two reads: X, y, splits, class names and paths (classify's read_codes)."""
    from cnncodes.classify.data import read_codes
    data = read_codes(cache)
    return data.X.tobytes(), data.y.tolist(), list(data.splits), list(data.class_names), data.paths


def damage(path, how, spots, other):
    """Damage ``path``: flip bits, truncate, zero a 4 KiB page or swap in ``other``; ``spots`` are
    (position in [0, 1), bit) pairs."""
    size = os.path.getsize(path)
    if how == "swap":
        shutil.copyfile(other, path)
    elif how == "truncate":
        os.truncate(path, int(spots[0][0] * size))
    elif size == 0:
        return
    elif how == "zero":
        start = int(spots[0][0] * size) // PAGE * PAGE
        with open(path, "r+b") as f:
            f.seek(start)
            f.write(bytes(min(PAGE, size - start)))
    else:
        with open(path, "r+b") as f:
            for where, bit in spots:
                f.seek(int(where * size))
                byte = f.read(1)[0]
                f.seek(int(where * size))
                f.write(bytes([byte ^ (1 << bit)]))


def outcome(read, before):
    """('same' | 'refused' | 'wrong' | 'not one line' | 'crashed', detail)."""
    try:
        got = read()
    except CacheError as exc:
        return ("refused" if "\n" not in str(exc).strip() else "not one line"), str(exc)
    except Exception as exc:  # noqa: BLE001  (any other error is a finding)
        return "crashed", f"{type(exc).__name__}: {exc}"
    return ("same", None) if got == before else ("wrong", None)


def _comparable(snap):
    if snap is NO_CACHE:
        return snap
    summary = {k: v for k, v in snap.summary.items() if k not in ("size_bytes",)}
    return (snap.rows, {k: v.tobytes() for k, v in snap.codes.items()}, snap.failures, snap.class_names,
            snap.vanished, repr(summary))


def names_of(path) -> list:
    """How verify may name a damaged file: its name, and 'cache file' for the cache file itself."""
    base = os.path.basename(path)
    return [base, "cache file"] if base.endswith(".h5") and not base.startswith("seg-") else [base]


def check_damage(caches, kind, pick, how, spots) -> dict:
    """Damage one file of a fresh copy and try everything on it: what each part said, and the
    violations of what is wanted (empty: as wanted)."""
    cache = caches.fresh()
    files = caches.files(cache, kind)
    target = files[pick % len(files)]
    others = caches.files(caches.other, kind) or files
    same_name = [f for f in others if os.path.basename(f) == os.path.basename(target)]
    damage(target, how, spots, (same_name or others)[pick % len(others) if not same_name else 0])
    seen = {"kind": kind, "how": how, "file": os.path.basename(target)}
    wrong = []
    seen["reader"], said = outcome(lambda: _comparable(read_cache(cache)), caches.before)
    seen["stage two"], said_two = outcome(lambda: stage_two(cache), caches.stage_two)
    for part in ("reader", "stage two"):
        if seen[part] not in ("same", "refused"):
            wrong.append(f"{part}: {seen[part]} ({said if part == 'reader' else said_two})")
    try:
        report = verify_cache(cache)
    except Exception as exc:  # noqa: BLE001
        seen["verify"] = "crashed"
        wrong.append(f"verify crashed: {type(exc).__name__}: {exc}")
        report = None
    if report is not None:
        named = [p for p in report.problems if any(n in p for n in names_of(target))]
        stray = [p for p in report.problems if p not in named]
        seen["verify"] = "ok" if report.ok else "named" if named and not stray else "unnamed"
        if "refused" in (seen["reader"], seen["stage two"]) and not named:
            wrong.append(f"readers refuse ({said or said_two}) but verify does not name {seen['file']}: "
                         f"{report.problems}")
        if stray:
            wrong.append(f"verify blames another part than the damaged {seen['file']}: {stray}")
    try:
        seen["writer"], written = extract_into(caches, cache)
    except Exception as exc:  # noqa: BLE001
        seen["writer"], written = "crashed", None
        wrong.append(f"extract crashed: {type(exc).__name__}: {exc}")
    if seen["writer"] == "not one line":
        wrong.append(f"extract refused in more than one line: {written}")
    if seen["writer"] == "ok":  # the cache must hold what the extract must give, or still refuse
        after, said_after = outcome(lambda: differences(read_cache(cache), written, VIEWS, DTYPE), [])
        seen["after"] = after
        if after == "refused" and "refused" not in (seen["reader"], seen["stage two"]):
            wrong.append("extract made the damaged cache unreadable")
        elif after == "refused":
            again = verify_cache(cache)
            if again.ok or not [p for p in again.problems if any(n in p for n in names_of(target))]:
                wrong.append(f"after extract verify does not name {seen['file']}: {again.problems}")
        elif after != "same":
            wrong.append(f"after extract into a damaged {kind} file readers get: {after} ({said_after})")
    seen["violations"] = wrong
    return seen


def extract_into(caches, cache):
    """extract with one new photo: ('ok', the State it must give) or ('refused', message)."""
    world = caches.world
    saved = dict(world.files)
    world.add("new.jpg", 999, "ant")
    try:
        opts = Options(shard_rows=2, batch=1)
        try:
            with open_for_append(cache, fingerprint(VIEWS, DTYPE), LAYERS, ["ant", "bee", "cat"],
                                 background=False) as session:
                _, _, moves = extract(session, world, opts, VIEWS, DTYPE)
        except CacheError as exc:
            return ("refused" if "\n" not in str(exc).strip() else "not one line"), str(exc)
        return "ok", ideal(world, caches.state, opts, moves)
    finally:
        world.files = saved


SPOTS = st.lists(st.tuples(st.integers(0, 10**6 - 1).map(lambda v: v / 10**6), st.integers(0, 7)),
                 min_size=1, max_size=3)
HOW = st.sampled_from(["flip", "flip", "truncate", "zero", "swap"])


def in_child(fn, *args):
    """``fn(*args)`` in a forked process: HDF5 may crash on a damaged file (a segfault is no refusal)."""
    out = os.path.join(os.path.dirname(os.path.dirname(caches_root[0])), f"child-{os.getpid()}.pickle")
    pid = os.fork()
    if pid == 0:
        signal.alarm(CHILD_SECONDS)  # a hang (HDF5 looping on a damaged file) fails the trial, never stalls it
        try:
            result = ("ok", fn(*args))
        except BaseException:
            result = ("error", traceback.format_exc())
        try:
            with open(out, "wb") as f:
                pickle.dump(result, f)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        raise AssertionError(f"the process died of signal {os.WTERMSIG(status)} ({signal.Signals(os.WTERMSIG(status)).name})")
    with open(out, "rb") as f:
        kind, value = pickle.load(f)
    os.remove(out)
    if kind == "error":
        raise AssertionError(value)
    return value


caches_root = [tempfile.gettempdir() + "/x/y"]
CHILD_SECONDS = 120


@pytest.mark.parametrize("kind", KINDS)
def test_damage_is_refused_or_harmless(caches, kind):
    caches_root[0] = caches.trial
    seen_all = collections.Counter()  # CNNCODES_PROPERTIES_REPORT=FILE: what each part said, as JSON
    started = time.time()

    @settings(max_examples=TRIALS, deadline=None, database=None, derandomize=not LONG,
              suppress_health_check=list(HealthCheck))
    @given(pick=st.integers(0, 20), how=HOW, spots=SPOTS)
    def trial(pick, how, spots):
        seen = in_child(check_damage, caches, kind, pick, how, spots)
        seen_all[" ".join(f"{k}={seen.get(k, '-')}" for k in ("how", "reader", "stage two", "verify", "writer",
                                                              "after"))] += 1
        assert not seen["violations"], "\n".join(seen["violations"])
    try:
        trial()
    finally:
        report = os.environ.get("CNNCODES_PROPERTIES_REPORT")
        if report:
            with open(f"{report}.damage-{kind}.json", "w") as f:
                json.dump({"seconds": round(time.time() - started, 1), "trials": sum(seen_all.values()),
                           **dict(sorted(seen_all.items()))}, f, indent=1)


# --- the damage found, kept as regular tests (each failed before cache/_integrity.py) -------------------
def _small_cache(tmp_path, variant=0, name="c.h5"):
    folder = tmp_path / f"v{variant}"
    folder.mkdir(exist_ok=True)
    cache = str(folder / name)
    world, state = build_cache(cache, variant, VIEWS, DTYPE, keep_retired=False)
    return cache, world, state


def _segments(cache):
    from cnncodes.cache._manifest import read_manifest
    return [os.path.join(f"{cache}.shards", n) for n in read_manifest(cache).segments]


def _flip_at(path, offset, bit=0):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def _refused_in_one_line(read):
    with pytest.raises(CacheError) as caught:
        read()
    assert "\n" not in str(caught.value).strip()
    return str(caught.value)


def _verify_names(cache, part):
    report = verify_cache(cache)
    assert not report.ok and report.problems and all(part in p for p in report.problems), report.problems


def test_a_label_changed_inside_a_segment_is_refused_never_read(tmp_path):
    """Before: labels were stored as they came, so a flipped bit read as another class, silently
    (the campaign's 'segment flip: reader wrong'). Now every per-row dataset carries fletcher32
    checksums, as codes do: the read fails in one line, verify names the segment."""
    import h5py
    cache, _, _ = _small_cache(tmp_path)
    segment = _segments(cache)[0]
    with h5py.File(segment, "r") as f:
        where = f["labels"].id.get_chunk_info(0).byte_offset
    _flip_at(segment, where, 1)  # label 0 -> 2: a valid class
    _refused_in_one_line(lambda: read_cache(cache))
    _refused_in_one_line(lambda: stage_two(cache))
    _verify_names(cache, os.path.basename(segment))
    said = _refused_in_one_line(lambda: extract_into_cache(cache))
    assert os.path.basename(segment) in said


def test_a_path_changed_inside_a_segment_is_refused_never_read(tmp_path):
    """Before: paths were variable-length strings, which HDF5 keeps in a heap with no checksum: a
    changed byte read as another photo's path (p00.jpg as p01.jpg), silently. Now a segment's paths
    are fixed-width UTF-8 in checksummed chunks, as every per-row dataset."""
    import h5py
    cache, _, _ = _small_cache(tmp_path)
    segment = _segments(cache)[0]
    with h5py.File(segment, "r") as f:
        chunk = f["paths"].id.get_chunk_info(0)
    _flip_at(segment, chunk.byte_offset + chunk.size // 2, 0)
    _refused_in_one_line(lambda: read_cache(cache))
    _refused_in_one_line(lambda: stage_two(cache))
    _verify_names(cache, os.path.basename(segment))


def _within(seconds, fn, *args):
    """``fn(*args)`` in a forked process that an alarm ends after ``seconds``: a hang fails the test."""
    def timed():
        signal.alarm(seconds)
        return fn(*args)
    return in_child(timed)  # (the alarm set here replaces in_child's own)


def test_a_segment_holds_no_heap_for_hdf5_to_hang_on(tmp_path):
    """Found by the long damage run: a segment's damaged global heap (where HDF5 kept its
    variable-length paths, class names, failures and string attributes, with no checksum) made HDF5
    loop for ever inside H5HG__cache_heap_deserialize while reading paths through the cache file: a
    reader, stage two and extract hung instead of refusing. Now a segment holds no variable-length
    string at all (the cache file's /paths stays one: HDF5 converts on read)."""
    cache, _, _ = _small_cache(tmp_path)
    for segment in _segments(cache):
        assert b"GCOL" not in open(segment, "rb").read()
    import h5py
    with h5py.File(cache, "r") as f:
        assert f["paths"].dtype.kind == "O"  # what plain h5py reads from a cache file, unchanged


def test_a_packed_files_damaged_heap_is_refused_before_hdf5_reads_it(tmp_path):
    """A packed file keeps the cache file's variable-length strings (plain h5py reads it as a cache
    file): their heaps and references are sealed (SHA-256 in its user block) and checked before HDF5
    reads a byte of them, so a damaged heap is one line, not a hang."""
    from cnncodes.cache.pack import pack_cache
    cache, _, _ = _small_cache(tmp_path)
    packed = str(tmp_path / "packed.h5")
    pack_cache(cache, packed)
    before = read_cache(packed)
    data = open(packed, "rb").read()
    heap = data.index(b"GCOL\x01\x00\x00\x00")
    assert data.count(b"GCOL\x01") >= 1
    for offset in range(heap, heap + 4096, 97):  # every part of the collection: sizes, indices, strings
        _flip_at(packed, offset, 3)
        said = _within(20, lambda: _refused_in_one_line(lambda: read_cache(packed)))
        assert "heaps" in said
        _verify_names(packed, "cache file")
        _flip_at(packed, offset, 3)
    assert read_cache(packed).rows == before.rows


def test_a_changed_byte_anywhere_in_the_cache_file_is_refused_before_hdf5_reads_it(tmp_path):
    """Before: a flipped bit in the cache file read as another label, split or path (its tables and
    the virtual datasets' mapping have no checksum), or ended in KeyError, RuntimeError or
    UnicodeDecodeError tracebacks, in verify and extract too. Now the file's SHA-256 seal is
    checked before HDF5 parses it: every change is one line, verify names the cache file."""
    cache, world, _ = _small_cache(tmp_path)
    size = os.path.getsize(cache)
    for offset in range(0, size, max(1, size // 40)):
        _flip_at(cache, offset, offset % 8)
        _refused_in_one_line(lambda: read_cache(cache))
        _refused_in_one_line(lambda: stage_two(cache))
        _verify_names(cache, "cache file")
        _refused_in_one_line(lambda: extract_into_cache(cache))
        _flip_at(cache, offset, offset % 8)  # restored: reads again
    assert read_cache(cache) is not NO_CACHE


def test_a_segment_from_another_cache_is_refused(tmp_path):
    """Before: a segment file swapped for the same-named one of another cache was read as this
    cache's rows (other photos' paths and codes, silently). Now the cache file lists each
    segment's digest, and readers and writers compare it before a row is read."""
    cache, _, _ = _small_cache(tmp_path, 0)
    other, _, _ = _small_cache(tmp_path, 1)
    for mine, theirs in zip(_segments(cache), _segments(other)):
        shutil.copyfile(mine, f"{mine}.saved")
        shutil.copyfile(theirs, mine)
        said = _refused_in_one_line(lambda: read_cache(cache))
        assert os.path.basename(mine) in said and "another" in said
        _verify_names(cache, os.path.basename(mine))
        _refused_in_one_line(lambda: extract_into_cache(cache))
        os.replace(f"{mine}.saved", mine)


def test_a_cache_file_from_another_cache_is_refused(tmp_path):
    cache, _, _ = _small_cache(tmp_path, 0)
    other, _, _ = _small_cache(tmp_path, 1)
    shutil.copyfile(other, cache)
    _refused_in_one_line(lambda: read_cache(cache))
    _refused_in_one_line(lambda: extract_into_cache(cache))
    report = verify_cache(cache)
    assert not report.ok


def test_a_damaged_retired_segment_is_deleted_by_the_next_extract(tmp_path):
    """Before: a retired segment (kept while a reader was open) cut short made extract crash with an
    OSError traceback, and verify blame the cache's structure. Now verify names it, and extract
    deletes it as it deletes any retired segment."""
    folder = tmp_path / "r"
    folder.mkdir()
    cache = str(folder / "c.h5")
    world, state = build_cache(cache, 0, VIEWS, DTYPE, keep_retired=True)
    report = verify_cache(cache)
    assert report.ok and report.retired
    retired = os.path.join(f"{cache}.shards", report.retired[0])
    os.truncate(retired, os.path.getsize(retired) // 3)
    _verify_names(cache, report.retired[0])
    with open_for_append(cache, fingerprint(VIEWS, DTYPE), LAYERS, ["ant", "bee", "cat"]) as session:
        extract(session, world, Options(), VIEWS, DTYPE)
    assert not os.path.exists(retired)
    assert verify_cache(cache).ok and not differences(read_cache(cache), state, VIEWS, DTYPE)


def test_an_unreadable_shard_not_yet_linked_is_refused_in_one_line(tmp_path):
    """A shard a killed run wrote (not linked yet) that cannot be read: its rows are not in the cache
    and cannot be linked; extract says so in one line (before: an OSError traceback)."""
    cache, world, _ = _small_cache(tmp_path)
    from cnncodes.cache._manifest import read_manifest
    seq = int(read_manifest(cache).attrs["next_seq"])
    shard = os.path.join(f"{cache}.shards", f"seg-{seq:08d}.h5")
    shutil.copyfile(_segments(cache)[0], shard)
    os.truncate(shard, 100)
    said = _refused_in_one_line(lambda: extract_into_cache(cache))
    assert os.path.basename(shard) in said and "move it aside" in said
    _verify_names(cache, os.path.basename(shard))


def extract_into_cache(cache):
    world = World()
    world.add("x.jpg", 1, "ant")
    with open_for_append(cache, fingerprint(VIEWS, DTYPE), LAYERS, ["ant"]) as session:
        extract(session, world, Options(), VIEWS, DTYPE)


def _as_written_before_checksums(cache):
    """Rewrite a cache as extract wrote it before cache/_integrity.py: segments without digests, with
    variable-length strings and contiguous per-row datasets, a cache file without seal or digests."""
    import h5py
    folder = f"{cache}.shards"
    for name in sorted(os.listdir(folder)):
        if not (name.startswith("seg-") and name.endswith(".h5")):
            continue
        path = os.path.join(folder, name)
        with h5py.File(path, "r") as f, h5py.File(f"{path}.old", "w") as out:
            for key, value in f.attrs.items():
                if key not in ("digest", "tables_sha256"):
                    out.attrs[key] = value.decode() if isinstance(value, bytes) else (
                        value.astype(object).astype(str).astype(h5py.string_dtype()) if getattr(value, "dtype", None)
                        is not None and value.dtype.kind == "S" else value)

            def copy(item, obj):
                if isinstance(obj, h5py.Group):
                    return
                chunked = item.startswith("codes/")
                data = obj[()]
                if item in ("paths", "class_names", "moved_from") or item.startswith("failed/") and item != "failed/stat":
                    # variable-length, as they were (keys and splits were fixed-width already)
                    data = np.array([v.decode() for v in data.tolist()], dtype=h5py.string_dtype())
                made = out.create_dataset(item, data=data, dtype=data.dtype, chunks=obj.chunks if chunked else None,
                                          maxshape=obj.maxshape if chunked else None, fletcher32=chunked)
                for key, value in obj.attrs.items():
                    made.attrs[key] = value
            f.visititems(copy)
            for group in ("codes", "failed"):
                out.require_group(group)
        os.replace(f"{path}.old", path)
    with h5py.File(cache, "r") as f, h5py.File(f"{cache}.old", "w") as out:
        for key, value in f.attrs.items():
            out.attrs[key] = value
        for item in f:
            f.copy(f[item], out, item)
        del out["segments/names"].attrs["digests"]
    os.replace(f"{cache}.old", cache)


def test_a_cache_written_before_checksums_reads_as_before_and_takes_new_rows(tmp_path):
    """Schema note: caches written before the seal, digests and fixed-width segments are read as they
    are; the next extract writes its segments and cache file with them, old and new segments side by
    side behind the cache file's virtual datasets."""
    import h5py
    cache, world, state = _small_cache(tmp_path)
    before = read_cache(cache)
    _as_written_before_checksums(cache)
    with h5py.File(cache, "r") as f:
        assert f.userblock_size == 0 and f["codes/a"].is_virtual
    assert not differences(read_cache(cache), state, VIEWS, DTYPE) and read_cache(cache).rows == before.rows
    assert verify_cache(cache).ok
    world.add("new.jpg", 77, "bee")
    with open_for_append(cache, fingerprint(VIEWS, DTYPE), LAYERS, ["ant", "bee", "cat"]) as session:
        _, _, moves = extract(session, world, Options(), VIEWS, DTYPE)
    state = ideal(world, state, Options(), moves)
    assert not differences(read_cache(cache), state, VIEWS, DTYPE)
    assert verify_cache(cache).ok
    with h5py.File(cache, "r") as f:
        assert f.userblock_size == 512
    for path in sorted(world.files)[:5]:  # enough rows replaced that every older segment is rewritten
        world.rewrite(path, 500 + len(path) + sorted(world.files).index(path))
    with open_for_append(cache, fingerprint(VIEWS, DTYPE), LAYERS, ["ant", "bee", "cat"]) as session:
        _, _, moves = extract(session, world, Options(shard_rows=8), VIEWS, DTYPE)
    state = ideal(world, state, Options(shard_rows=8), moves)
    for segment in _segments(cache):  # every older segment rewritten: fixed-width, digests listed
        with h5py.File(segment, "r") as f:
            assert f["paths"].dtype.kind == "S" and "digest" in f.attrs
    assert not differences(read_cache(cache), state, VIEWS, DTYPE) and verify_cache(cache).ok
