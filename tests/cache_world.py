"""A world of photos, a plain model of what a cache must hold, and a driver that writes a cache the
way extract does, for the cache's property tests (tests/test_cache_properties.py, test_cache_damage.py).

Codes are synthetic and deterministic per photo content (a photo's key seeds them), so "bit-identical
to a fresh extract" is checked without a network. The driver makes the calls extract/runner.py
makes on an AppendSession (lookup, carry_rows for relabels and touched files, move_rows for renamed
photos, add_rows with augmented views, add_failures, remove for prune, shards of ``shard_rows``),
in the runner's order, and says what each shard changes (a Delta), so a kill at any point has an
exact expected outcome.
"""
import functools
import hashlib
import os
from dataclasses import dataclass, field, replace

import h5py
import numpy as np

from cnncodes.cache import KEEP_LABEL, Fingerprint, open_cache
from cnncodes.cache.schema import class_of, read_failures

LAYERS = {"a": 4, "b": 3}
CLASSES = ("ant", "bee", "cat")
REASON = "cannot be decoded"
PATHS = tuple(f"p{i:02d}.jpg" for i in range(10))


# --- photos -----------------------------------------------------------------------------------------
def key_of(content: int) -> str:
    return hashlib.sha256(f"photo {content}".encode()).hexdigest()


def size_of(content: int) -> int:
    return 1000 + content % 3  # sizes collide on purpose: a moved photo is found by size, then key


def broken(content: int) -> bool:
    return content % 7 == 6  # a photo that cannot be decoded: a recorded failure


def split_of(key: str) -> str:
    v = int(key[:8], 16) % 10
    return "train" if v < 6 else "val" if v < 8 else "test"


@functools.lru_cache(maxsize=4096)
def _code(key: str, view: int, layer: str, dtype: str) -> np.ndarray:
    rng = np.random.default_rng([int(key[:15], 16), view, list(LAYERS).index(layer)])
    out = rng.standard_normal(LAYERS[layer]).astype(dtype)
    out.flags.writeable = False
    return out


def codes_of(key: str, view: int, dtype: str) -> dict:
    """What a fresh extract computes for one view of the photo whose key is ``key``."""
    return {layer: _code(key, view, layer, dtype) for layer in LAYERS}


def fingerprint(views: int, dtype: str) -> Fingerprint:
    recipe = {"count": views, "scale": [0.5, 1.0], "ratio": [0.75, 1.3333], "seed": 0} if views else None
    return Fingerprint(backbone="toy", layers=tuple(LAYERS), weights="random:0", preprocess={"crop": 8},
                       dtype=dtype, views=recipe, provenance={"data_root": "/photos"})


@dataclass(frozen=True)
class Photo:
    content: int
    label: object  # a class name, or None (unlabeled)
    mtime: int
    inode: int

    @property
    def stat(self) -> tuple:
        return (size_of(self.content), self.mtime, self.inode)


class World:
    """The photos on disk, as extract's scan would list them (nothing is written: stat data is made up)."""

    def __init__(self):
        self.files = {}
        self._clock = 1
        self._inodes = 1

    def _tick(self) -> int:
        self._clock += 1
        return self._clock * 1_000_000_007  # never whole seconds: no racy-clean smudging to model

    def _inode(self) -> int:
        self._inodes += 1
        return self._inodes

    def add(self, path, content, label):
        self.files[path] = Photo(content, label, self._tick(), self._inode())

    def rewrite(self, path, content, same_inode=True):
        old = self.files[path]
        self.files[path] = Photo(content, old.label, self._tick(), old.inode if same_inode else self._inode())

    def touch(self, path):
        self.files[path] = replace(self.files[path], mtime=self._tick())

    def delete(self, path):
        del self.files[path]

    def rename(self, old, new):
        self.files[new] = self.files.pop(old)  # same inode, same mtime

    def copy(self, old, new):
        self.files[new] = replace(self.files[old], mtime=self._tick(), inode=self._inode())

    def relabel(self, path, label):
        self.files[path] = replace(self.files[path], label=label)  # a manifest's label column: no stat change


# --- the model ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    key: str
    label: object
    split: str
    stat: tuple


@dataclass
class State:
    """What a cache holds, as readers must see it: path -> Row (one per photo; its views follow from
    its split), path -> failure (key, reason, stat), and info's vanished count."""
    rows: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)
    vanished: object = None

    def copy(self) -> "State":
        return State(dict(self.rows), dict(self.failures), self.vanished)


NO_CACHE = None  # the state where no cache file has been published yet


@dataclass
class Delta:
    """What one commit changes: rows (new, replaced, carried, moved in), failures, rows moved away
    (``cut``), and at close the pruned paths and the vanished count."""
    rows: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)
    cut: set = field(default_factory=set)
    removed: set = field(default_factory=set)
    vanished: object = "unchanged"

    def empty(self) -> bool:
        return not (self.rows or self.failures or self.cut)

    def touched(self) -> set:
        return set(self.rows) | set(self.failures) | self.cut | self.removed

    def apply(self, state) -> State:
        out = State() if state is NO_CACHE else state.copy()
        for path in self.cut:
            out.rows.pop(path, None)
        for path, row in self.rows.items():
            out.failures.pop(path, None)
            out.rows[path] = row
        for path, failure in self.failures.items():
            out.rows.pop(path, None)
            out.failures[path] = failure
        for path in self.removed:
            out.rows.pop(path, None)
            out.failures.pop(path, None)
        if self.vanished != "unchanged":
            out.vanished = self.vanished
        return out


@dataclass(frozen=True)
class Options:
    """One extract run: prune, rows per shard, records per encoded batch, whether the source states
    labels (a manifest without a label column keeps the cached ones), and a manifest listing only
    some photos (None: the whole folder)."""
    prune: bool = False
    shard_rows: int = 4
    batch: int = 2
    states_labels: bool = True
    listed: frozenset = None
    background: bool = True


class Marks:
    """Where the driver is, for a writer that may be killed (the parent reads the log back)."""

    def commit(self, index, delta):
        pass

    def closing(self, delta, moves):
        pass


def extract(session, world: World, opts: Options, views: int, dtype: str, marks=Marks()):
    """Bring the cache up to date with ``world`` through ``session``, as extract/runner.py does.
    Returns (shard deltas, close delta, moves {new path: old path})."""
    shards = []
    delta = Delta()
    close = Delta()

    def commit():
        nonlocal delta
        assert (session.pending() > 0) == (not delta.empty()), (session.pending(), delta)
        if delta.empty():
            return
        marks.commit(len(shards), delta)
        session.commit_shard()
        shards.append(delta)
        delta = Delta()

    listed = sorted(world.files if opts.listed is None else (p for p in opts.listed if p in world.files))
    pending, seen = [], set()
    for path in listed:  # extract/runner.py's _plan
        seen.add(path)
        photo = world.files[path]
        label = photo.label if opts.states_labels else None
        held = session.lookup(path)
        if held is not None and not held.failed and not opts.states_labels:
            label = held.label
        if held is None:
            pending.append((path, photo, label, None))
        elif held.stat == photo.stat:
            if not held.failed and held.label != label:  # relabelled by a manifest: codes kept
                session.carry_rows([path], [photo.stat], [label])
                delta.rows[path] = Row(held.key, label, split_of(held.key), photo.stat)
        else:
            pending.append((path, photo, label, held))
    vanished = [p for p in session.paths() if p not in seen]
    moves = _moved_photos(session, world, pending, vanished, opts, lambda: delta, commit)
    pending = [item for item in pending if item[0] not in moves]
    gone = set(moves.values())
    vanished = [p for p in vanished if p not in gone]
    if opts.prune and vanished:
        session.remove(vanished)
        close.removed = set(vanished)
    close.vanished = 0 if opts.prune or opts.listed is not None else len(vanished)
    session.record_vanished(close.vanished)
    commit_every = opts.batch * max(1, round(opts.shard_rows / opts.batch))
    for i, (path, photo, label, known) in enumerate(pending):  # _encode_and_commit, _commit_batch
        key = key_of(photo.content)
        if known is not None and known.key == key:  # the same bytes: a new stat (or label) only
            if not known.failed and (known.stat != photo.stat or known.label != label):
                session.carry_rows([path], [photo.stat], [label])
                delta.rows[path] = Row(key, label, split_of(key), photo.stat)
            elif known.failed and known.stat != photo.stat:
                session.add_failures([path], [known.key], [known.reason], [photo.stat])
                delta.failures[path] = (known.key, known.reason, photo.stat)
        elif broken(photo.content):
            session.add_failures([path], [key], [REASON], [photo.stat])
            delta.failures[path] = (key, REASON, photo.stat)
        else:
            split = split_of(key)
            n = 1 + (views if split == "train" else 0)
            codes = {layer: np.stack([codes_of(key, v, dtype)[layer] for v in range(n)]) for layer in LAYERS}
            session.add_rows([path] * n, [key] * n, [split] * n, [label] * n, [photo.stat] * n, codes,
                             list(range(n)) if views else None)
            delta.rows[path] = Row(key, label, split, photo.stat)
        if (i + 1) % commit_every == 0:
            commit()
    commit()  # what is buffered (relabels, the last records): the session's close would commit it
    marks.closing(close, moves)
    return shards, close, moves


def _moved_photos(session, world, pending, vanished, opts, current, commit) -> dict:
    """extract/runner.py's _moved_photos, but every vanished row of the same bytes is a candidate (the
    runner keeps one per size and key, so a gone photo whose bytes a listed-away copy also holds is
    missed: tests/test_cache_properties.py, test_a_moved_photo_with_a_copy_left_elsewhere_...)."""
    by_size = {}
    for path in vanished:
        held = session.lookup(path)
        if held is not None and not held.failed:
            by_size.setdefault(held.stat[0], {}).setdefault(held.key, []).append((path, held))
    moves, taken = {}, set()
    if not by_size:
        return moves
    for path, photo, label, known in pending:
        if known is not None or photo.stat[0] not in by_size:
            continue
        key = key_of(photo.content)
        old = next((old for old in by_size[photo.stat[0]].get(key, []) if old[0] not in taken and (
            old[0] not in world.files or world.files[old[0]].inode == photo.inode)), None)  # a copy still there:
        if old is None:                                                                  # a photo of its own
            continue
        taken.add(old[0])
        split = split_of(key)
        session.move_rows([old[0]], [path], [photo.stat], [photo.label if opts.states_labels else KEEP_LABEL],
                          [split])
        delta = current()  # the shard being filled: commit() starts a new one
        delta.rows[path] = Row(key, photo.label if opts.states_labels else old[1].label, split, photo.stat)
        delta.cut.add(old[0])
        moves[path] = old[0]
        if len(moves) % opts.shard_rows == 0:
            commit()
    return moves


def ideal(world: World, before, opts: Options, moves: dict) -> State:
    """What the cache must hold after an uninterrupted extract, from the world and the cache before
    it alone (the driver's choice among equally good moves is taken, once checked to be one)."""
    before = State() if before is NO_CACHE else before
    listed = sorted(world.files if opts.listed is None else (p for p in opts.listed if p in world.files))
    held_paths = set(before.rows) | set(before.failures)
    vanished_rows = {p for p in before.rows if p not in listed}
    out = State()
    for path in listed:
        photo = world.files[path]
        key = key_of(photo.content)
        row, failure = before.rows.get(path), before.failures.get(path)
        label = photo.label if opts.states_labels else (row.label if row is not None else None)
        if failure is not None and (failure[2] == photo.stat or failure[0] == key):
            out.failures[path] = (failure[0], failure[1], photo.stat)  # the same broken bytes: not retried
        elif broken(photo.content):
            out.failures[path] = (key, REASON, photo.stat)
        else:
            out.rows[path] = Row(key, label, split_of(key), photo.stat)
    used = set()
    for new, old in moves.items():  # each a valid move: a new path, a vanished row of the same bytes, gone
        assert new in listed and new not in held_paths and old in vanished_rows and old not in used, (new, old)
        assert before.rows[old].key == key_of(world.files[new].content), (new, old)
        assert old not in world.files or world.files[old].inode == world.files[new].inode, (new, old)
        used.add(old)
        if not opts.states_labels:
            out.rows[new] = replace(out.rows[new], label=before.rows[old].label)
    for path in listed:  # and no move was missed
        if path in held_paths or path in moves or broken(world.files[path].content):
            continue
        photo = world.files[path]
        for old in vanished_rows - used:
            row = before.rows[old]
            if row.key == key_of(photo.content) and row.stat[0] == photo.stat[0] and (
                    old not in world.files or world.files[old].inode == photo.inode):
                raise AssertionError(f"{path} is {old} moved, but its row was not moved")
    kept = [p for p in set(before.rows) | set(before.failures) if p not in listed and p not in used]
    if not opts.prune:
        for path in kept:
            if path in before.rows:
                out.rows[path] = before.rows[path]
            else:
                out.failures[path] = before.failures[path]
    out.vanished = 0 if opts.prune or opts.listed is not None else len(kept)
    return out


# --- what a cache holds, read back ------------------------------------------------------------------
@dataclass
class Snapshot:
    rows: list        # (path, view, key, label, split, stat) per row, in row order
    codes: dict       # layer -> float32 [N, D]
    failures: dict    # path -> (key, reason, stat)
    class_names: list
    vanished: object
    summary: dict = None

    def order(self) -> list:
        return [r[0] for r in self.rows if r[1] == 0]


def snapshot_of_reader(c, summary=True) -> Snapshot:
    """Every row of an open CodesCache, read through it."""
    paths, keys, splits = c.paths, c.keys, c.splits.tolist()
    labels = class_of(c.labels, c.class_names)
    stat = [tuple(int(v) for v in s) for s in c.raw("stat")[()]]
    views = c.views.tolist()
    rows = list(zip(paths, views, keys, labels, splits, stat))
    codes = {layer: c.codes(layer) for layer in LAYERS}
    failures = {p: (k, r, tuple(s)) for p, k, r, s in read_failures(c.raw("failed"))}
    return Snapshot(rows, codes, failures, list(c.class_names), c.attrs.get("vanished_rows"),
                    c.summary() if summary else None)


def snapshot_of_h5(f) -> Snapshot:
    """The same through plain h5py (an open h5py.File), as docs/cache-format.md reads it."""
    names = [s.decode() for s in f["class_names"][()]]
    n = len(f["labels"])
    views = f["views"][()].tolist() if "views" in f else [0] * n
    rows = list(zip([p.decode() for p in f["paths"][()]], views, [k.decode() for k in f["keys"][()]],
                    class_of(f["labels"][()], names), [s.decode() for s in f["splits"][()]],
                    [tuple(int(v) for v in s) for s in f["stat"][()]]))
    codes = {layer: f["codes"][layer][()].astype(np.float32) for layer in LAYERS}
    failures = {p: (k, r, tuple(s)) for p, k, r, s in read_failures(f["failed"])}
    vanished = f.attrs.get("vanished_rows")
    return Snapshot(rows, codes, failures, names, None if vanished is None else int(vanished))


def read_cache(path):
    """The cache's Snapshot, or NO_CACHE where no cache file was published."""
    if not os.path.exists(path):
        return NO_CACHE
    with open_cache(path) as c:
        return snapshot_of_reader(c)


def differences(snap, state, views: int, dtype: str) -> list:
    """How a Snapshot differs from a model State (empty: it holds exactly that)."""
    if snap is NO_CACHE or state is NO_CACHE:
        return [] if snap is state else [f"cache {'missing' if snap is NO_CACHE else 'present'}, model "
                                         f"{'none' if state is NO_CACHE else 'a state'}"]
    out = []
    images = {}
    expected_codes = {layer: [] for layer in LAYERS}
    last = None
    for i, (path, view, key, label, split, stat) in enumerate(snap.rows):
        if view == 0:
            if path in images:
                out.append(f"{path}: two rows")
            images[path] = [i]
            last = path
        elif path != last or view != len(images[path]):
            out.append(f"row {i}: view {view} of {path} does not follow its photo's rows")
            images.setdefault(path, []).append(i)
        else:
            images[path].append(i)
        for layer, code in codes_of(key, view, dtype).items():
            expected_codes[layer].append(code)
    if set(images) != set(state.rows):
        out.append(f"photos: extra {sorted(set(images) - set(state.rows))}, missing {sorted(set(state.rows) - set(images))}")
    for path, row in state.rows.items():
        if path not in images:
            continue
        got = {snap.rows[i][2:] for i in images[path]}
        want = (row.key, row.label, row.split, tuple(row.stat))
        if got != {want}:
            out.append(f"{path}: rows hold {sorted(got, key=str)}, the model {want}")
        n = 1 + (views if row.split == "train" else 0)
        if len(images[path]) != n:
            out.append(f"{path}: {len(images[path])} rows, {n} expected (views)")
    for layer in LAYERS:
        want = np.stack(expected_codes[layer]).astype(np.float32) if snap.rows else np.zeros((0, LAYERS[layer]))
        got = snap.codes[layer]
        if got.shape != want.shape or got.tobytes() != want.tobytes():
            bad = [snap.rows[i][0] for i in range(min(len(got), len(want))) if got[i].tobytes() != want[i].tobytes()]
            out.append(f"codes of {layer} differ from a fresh extract's (rows of {bad[:5]}, shape {got.shape})")
    if snap.failures != state.failures:
        out.append(f"failures {snap.failures} != model {state.failures}")
    if snap.vanished != state.vanished:
        out.append(f"vanished_rows {snap.vanished} != model {state.vanished}")
    if snap.summary is not None:
        out += _summary_differences(snap.summary, state, views)
    return out


def _summary_differences(summary, state, views) -> list:
    centre = list(state.rows.values())
    view_rows = sum(views for r in centre if r.split == "train")
    classes = {}
    for r in centre:
        if r.label is not None:
            classes[r.label] = classes.get(r.label, 0) + 1
    splits = {}
    for r in centre:
        splits[r.split] = splits.get(r.split, 0) + 1
    want = {"rows": len(centre) + view_rows, "images": len(centre), "view_rows": view_rows,
            "unlabeled": sum(r.label is None for r in centre), "splits": splits, "failed": len(state.failures),
            "vanished": state.vanished}
    got = {k: summary[k] for k in want}
    out = [f"info says {got}, the model {want}"] if got != want else []
    if {k: v for k, v in summary["classes"].items() if v} != classes:
        out.append(f"info's classes {summary['classes']} != model {classes}")
    return out


def order_problems(before: list, after: list, touched: set) -> list:
    """Rows keep their order: those no commit touched stay in the order they had, before any touched one."""
    kept = [p for p in before if p not in touched and p in set(after)]
    untouched = [p for p in after if p not in touched]
    if untouched != kept or after[:len(kept)] != kept:
        return [f"row order: untouched rows {kept} became {after}"]
    return []


def open_plain(path):
    return h5py.File(path, "r")


# --- a cache with some history behind it -------------------------------------------------------------
def build_cache(cache, variant=0, views=2, dtype="float16", keep_retired=True):
    """A cache through a fixed history (photos added, rewritten, relabelled, broken, renamed, deleted,
    pruned; several shards and merges; unlabeled rows; failures), and what it holds: (world, State).
    ``variant`` changes every photo's bytes and nothing else, so two variants have files of the same
    names. With ``keep_retired`` a reader is open during the last run, so retired segments stay."""
    world, state = World(), NO_CACHE
    fp = fingerprint(views, dtype)

    def run(opts, reader=False):
        nonlocal state
        classes = sorted({p.label for p in world.files.values() if p.label is not None})
        held = open_cache(cache) if reader else None
        try:
            with open_for_append_session(cache, fp, classes, opts) as session:
                _, _, moves = extract(session, world, opts, views, dtype)
        finally:
            if held is not None:
                held.close()
        state = ideal(world, state, opts, moves)

    offset = 100 * variant
    for i in range(8):
        world.add(PATHS[i], offset + 3 * i + (1 if (3 * i) % 7 == 6 else 0), CLASSES[i % 3] if i != 5 else None)
    run(Options(shard_rows=10, batch=1))
    world.rewrite(PATHS[1], offset + 50)
    world.relabel(PATHS[2], CLASSES[0])
    world.add(PATHS[8], offset + 6, CLASSES[1])  # cannot be decoded: a failure
    world.touch(PATHS[6])
    run(Options(shard_rows=1, batch=1))
    world.delete(PATHS[3])
    world.rename(PATHS[4], PATHS[9])
    world.add(PATHS[3], offset + 40, CLASSES[2])
    run(Options(shard_rows=1, batch=1, prune=True), reader=keep_retired)
    return world, state


def open_for_append_session(cache, fp, classes, opts):
    from cnncodes.cache import open_for_append
    return open_for_append(cache, fp, LAYERS, classes, background=opts.background)
