"""The extract driver: plan what changed, let an engine encode it shard by shard, commit.

It knows the cache only through ``cache.open_for_append`` and never the order of its write steps.
"""
import os
import time
from dataclasses import asdict, dataclass, field, replace

from .. import cache as cache_api

from .config import CodeSpec, RunOptions, codes_for_cache
from .engines import make_engine
from .errors import ExtractError
from .extractor import Extractor
from .sources import paths_folder, read_and_hash, scan_source, split_of


class ExtractConfig:
    """One extract run: where (the data folder, the cache), what codes (a CodeSpec) and how to run
    (RunOptions). Fields of either may be given by name, ``ExtractConfig(data, cache, weights=...,
    workers=0)``: each goes to the dataclass that owns it, and is read from there (``config.codes.weights``,
    ``config.run.workers``)."""

    def __init__(self, data_root, cache_path, codes: CodeSpec = None, run: RunOptions = None, given=None, **options):
        known = CodeSpec.field_names() | RunOptions.field_names()
        unknown = sorted(set(options) - known)
        if unknown:
            import difflib
            close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"extract has no option {unknown[0]!r}{hint}; its options: {', '.join(sorted(known))}")
        self.data_root, self.cache_path = data_root, cache_path
        # the code options the caller chose; the rest an existing cache decides (config.codes_for_cache)
        self.given = set(given or ()) | {k for k, v in options.items() if v is not None}
        if codes is not None:  # a CodeSpec passed whole: what differs from the defaults was chosen
            self.given |= {f for f in CodeSpec.field_names() if getattr(codes, f) != getattr(CodeSpec(), f)}
        self.codes = replace(codes or CodeSpec(), **{k: v for k, v in options.items() if k in CodeSpec.field_names()})
        self.run = replace(run or RunOptions(), **{k: v for k, v in options.items() if k in RunOptions.field_names()})


@dataclass
class ExtractSummary:
    cache_path: str
    written: int = 0
    skipped: int = 0
    failed: int = 0
    unchanged: int = 0   # stat changed, bytes did not: codes kept, no decode
    vanished: int = 0    # cached rows with no file under the data root (or, from a manifest, not listed in it)
    listed_only: bool = False  # the source was a manifest: its vanished rows are only not listed
    deferred: int = 0    # images of the source outside ``only``: left for a later run
    relabelled: int = 0  # rows whose label the source changed (bytes unchanged: codes kept)
    moved: int = 0       # photos found under a new path: their rows moved there (codes kept)
    pruned: int = 0
    seconds: float = 0.0
    ignored: int = 0
    interrupted: object = None  # the KeyboardInterrupt (or SIGTERM's subclass of it) that stopped the run
    loop_seconds: float = 0.0  # decode + compute + commit only (no scan, weights or model build)
    failures: list = field(default_factory=list)
    indexed: dict = field(default_factory=dict)  # layer -> rows added to its faiss index after the run (or why not)

    @property
    def images_per_second(self) -> float:
        return (self.written + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def __repr__(self) -> str:
        return f"ExtractSummary({self.line()})"

    def to_dict(self) -> dict:
        """What `cnncodes extract --json` prints: the counts, the times, and each failure."""
        out = asdict(self) | {"interrupted": self.interrupted is not None,
                              "images_per_second": round(self.images_per_second, 2)}
        out["failures"] = [{"path": path, "reason": reason} for path, reason in self.failures]
        return out

    def line(self) -> str:
        state = "interrupted; re-run the same command to resume. " if self.interrupted else ""
        text = (f"{state}{self.cache_path}: wrote {self.written}, skipped {self.skipped} already cached, "
                f"failed {self.failed}, {self.seconds:.1f} s, {self.images_per_second:.1f} images/s")
        if self.unchanged:
            text += f"; {self.unchanged} re-read and found unchanged (codes kept)"
        if self.relabelled:
            text += f"; {self.relabelled} relabelled by the source (codes kept)"
        if self.moved:
            text += f"; {self.moved} found under a new path (rows moved, codes kept)"
        if self.pruned:
            text += f"; pruned {self.pruned} rows whose file is gone"
        elif self.vanished and self.listed_only:
            text += f"; {self.vanished} cached rows are not in this manifest (kept)"
        elif self.vanished:
            text += f"; {self.vanished} cached rows have no file under the data folder (prune=True drops them)"
        for layer, added in self.indexed.items():
            text += (f"; index of {layer}: {added} rows added" if isinstance(added, int) else
                     f"; index of {layer} {added}")
        return text


def run_extract(config: ExtractConfig) -> ExtractSummary:
    """Extract codes for every image under config.data_root that the cache lacks or that changed."""
    # The write lock comes first, as git takes index.lock before anything else: a second writer
    # fails right after start-up, before weights, the folder scan, Ray or int8 calibration.
    with cache_api.cache_lock(config.cache_path) as lock:
        return _run_locked(config, lock)


def _run_locked(config, lock) -> ExtractSummary:
    _check_source_exists(config.data_root)  # the data before the weights: a typo costs no download
    existing = cache_api.existing_fingerprint(config.cache_path)  # read once: the cache's extractor and root
    config.codes = codes_for_cache(config.codes, config.given, existing, config.cache_path)
    engine = make_engine(config.run.engine, config.run.ray_address)
    extractor = Extractor.for_new_codes(config.codes, config.data_root, config.run,
                                        compute_device=engine.compute_device(config.run.device))
    scan = scan_source(config.data_root)
    summary = ExtractSummary(cache_path=config.cache_path, ignored=len(scan.ignored))
    started = time.perf_counter()
    if extractor.precision == "int8":
        _settle_calibration(extractor, config, scan.records, existing)
    classes = sorted({r.label for r in scan.records if r.label is not None})
    with cache_api.open_for_append(config.cache_path, extractor.fingerprint, extractor.widths, classes,
                                   lock=lock) as session:
        pending = _plan(session, scan, config, summary, existing)
        if pending:
            engine.prepare(extractor)
            loop_started = time.perf_counter()
            try:
                _encode_and_commit(engine, extractor, session, pending, config, summary)
            except KeyboardInterrupt as stop:
                summary.interrupted = stop  # what is buffered is complete: the session commits it
            finally:
                summary.loop_seconds = time.perf_counter() - loop_started
    summary.seconds = time.perf_counter() - started
    return summary


def _check_source_exists(data) -> None:
    data = str(data)
    if "://" in data or "{" in data:
        return  # object storage and brace patterns: the scan says what is missing
    if not os.path.exists(data):
        raise ExtractError(f"{data}: no such folder or file; give a folder of images, a manifest (.csv, .parquet) "
                           "or tar shards")


def _settle_calibration(extractor, config, records, existing):
    try:
        extractor.adopt_calibration(existing)
    except ExtractError as exc:
        raise ExtractError(f"{config.cache_path}: {exc}") from None
    if not extractor.fingerprint.quantization:
        extractor.calibrate(records, config.codes.calibration_images, config.codes.int8_engine)


def _plan(session, scan, config, summary, existing=None) -> list:
    """The records to read: new files, and files whose stat changed (or all, with --rehash).

    A file the cache knows is read again with its old key attached: if its bytes still hash to
    it, the worker skips decoding and the row keeps its codes. The source's own bad entries (a
    manifest row naming no file, a truncated shard) are recorded as failures once.
    """
    pending = []
    seen = set()
    for path, reason in scan.failures:
        seen.add(path)
        held = session.lookup(path)
        if held is not None and held.failed and held.reason == reason:
            summary.skipped += 1
            continue
        if held is not None and not held.failed:  # a manifest naming a file that is not there: the
            summary.failed += 1                   # row cached from it keeps its codes (never lost to
            summary.failures.append((path, f"{reason}; its cached row is kept"))  # a typo or a moved folder)
            continue
        session.add_failures([path], [""], [reason], [(0, 0, 0)])
        summary.failed += 1
        summary.failures.append((path, reason))
    for record in scan.records:
        seen.add(record.path)
        if config.run.only is not None and record.path not in config.run.only:
            summary.deferred += 1
            continue
        held = session.lookup(record.path)
        if held is not None and not held.failed and not scan.states_labels:
            record = replace(record, label=held.label)  # a source without labels keeps the cached ones
        if held is None:
            pending.append(record)
        elif held.stat == record.stat and not config.run.rehash:
            if not held.failed and held.label != record.label:  # a manifest relabelled it: same codes
                session.carry_rows([record.path], [record.stat], [record.label])
                summary.relabelled += 1
            else:
                summary.skipped += 1
        else:
            pending.append(replace(record, known=held))
    vanished = [p for p in session.paths() if p not in seen]
    root = paths_folder(existing.provenance.get("data_root")) if existing is not None else ""
    moved = _moved_photos(session, pending, vanished, scan.states_labels, config, root)
    if moved:
        pending = [r for r in pending if r.path not in moved]
        gone = {old for old, _ in moved.values()}
        vanished = [p for p in vanished if p not in gone]
        summary.moved = len(moved)
    summary.vanished, summary.listed_only = len(vanished), not scan.lists_everything
    if config.run.prune and vanished:
        session.remove(vanished)
        summary.pruned = len(vanished)
    # what info shows as rows without a file: a manifest's unlisted rows may well have theirs
    session.record_vanished(0 if config.run.prune or not scan.lists_everything else len(vanished))
    return pending


def _moved_photos(session, pending, vanished, states_labels, config, root) -> dict:
    """New paths whose bytes are a row the cache holds under a path this source no longer lists,
    where that path's file is gone (a renamed or moved photo) or is this very file (one another
    writer cached under its own name, as CodesTransformer does): their rows move to the new path
    with its label and split, codes kept, nothing encoded. A byte-identical copy of a photo that
    is still there is a photo of its own and is encoded as one. Only files whose size matches such
    a row are read to compare (git finds renames the same way: by content).
    Returns {new path: (old path, key)}."""
    by_size = {}
    for path in vanished:
        held = session.lookup(path)
        if held is not None and not held.failed:
            # every vanished row of a size and key is a candidate: a copy of the photo still there
            # (left out of a manifest) must not hide the one that is gone
            by_size.setdefault(held.stat[0], {}).setdefault(held.key, []).append(path)
    if not by_size:
        return {}
    moved, taken = {}, set()
    for record in pending:
        if record.known is not None or record.stat[0] not in by_size:
            continue
        started = time.time_ns()
        try:
            _, key = read_and_hash(record)
        except OSError:
            continue  # the encode pass records the failure
        old = next((path for path in by_size[record.stat[0]].get(key, ())
                    if path not in taken and _gone_or_same_file(path, root, record)), None)
        if old is None:
            continue
        taken.add(old)
        split = split_of(record, key, config.codes.split_seed, config.codes.split_fractions)
        label = record.label if states_labels else cache_api.KEEP_LABEL
        session.move_rows([old], [record.path], [cache_api.untrusted_stat(record.stat, started)], [label], [split])
        moved[record.path] = (old, key)
        if len(moved) % config.run.shard_rows == 0:  # a shard of moves holds their codes: bounded like any other
            session.commit_shard()
    return moved


def _gone_or_same_file(old_path, root, record) -> bool:
    """Whether a cached row's file (its path as stored: absolute, or under the cache's data folder)
    no longer exists, or is the record's own file (same device and inode)."""
    if "://" in old_path or "://" in record.abspath or getattr(record, "member", None) is not None:
        return True  # object storage and archive members: named by their source alone
    full = old_path if os.path.isabs(old_path) or not root else os.path.join(root, old_path)
    try:
        old, new = os.stat(full), os.stat(record.abspath)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return (old.st_dev, old.st_ino) == (new.st_dev, new.st_ino)


def _encode_and_commit(engine, extractor, session, pending, config, summary):
    # Commits hold whole batches, so a resumed run batches the remaining images exactly as an
    # uninterrupted run would, and computes bit-identical codes.
    batch_size = extractor.batch_size
    commit_every = batch_size * max(1, round(config.run.shard_rows / batch_size))  # records per committed shard
    progress = _progress(len(pending), config.run.progress)
    for batch in _storage_errors_in_one_line(engine.run(extractor, pending)):
        _commit_batch(session, pending, batch, config, summary)
        end = batch.start + batch.count
        if end % commit_every == 0 or end == len(pending):
            session.commit_shard()
        progress.update(batch.count)
    progress.close()


def _commit_batch(session, records, batch, config, summary):
    """Hand one encoded batch to the session; its positions index ``records`` (the pending list)."""
    def stats(positions):  # what the next run compares: a file read too close to its mtime is smudged
        return [cache_api.untrusted_stat(records[i].stat, batch.read_ns[i]) for i in positions]

    if batch.indices:
        rows = [records[i] for i in batch.indices]
        keys = [batch.keys[i] for i in batch.indices]
        splits = [split_of(r, k, config.codes.split_seed, config.codes.split_fractions) for r, k in zip(rows, keys)]
        session.add_rows([r.path for r in rows], keys, splits, [r.label for r in rows], stats(batch.indices),
                         _as_stored(batch.codes, config.codes.dtype), batch.views)
        summary.written += batch.images()
    if batch.failed:
        failed = [i for i, _ in batch.failed]
        session.add_failures([records[i].path for i in failed], [batch.keys.get(i, "") for i in failed],
                             [reason for _, reason in batch.failed], stats(failed))
        summary.failed += len(failed)
        summary.failures += [(records[i].path, reason) for i, reason in batch.failed]
    if batch.unchanged:
        # Same bytes as cached: only a new stat (or label) to remember (nothing at all under --rehash).
        touched = [i for i in batch.unchanged if records[i].known.stat != records[i].stat]
        rows = [i for i in batch.unchanged if not records[i].known.failed
                and (records[i].known.stat != records[i].stat or records[i].known.label != records[i].label)]
        session.carry_rows([records[i].path for i in rows], stats(rows), [records[i].label for i in rows])
        summary.relabelled += sum(records[i].known.label != records[i].label for i in rows)
        broken = [i for i in touched if records[i].known.failed]  # the same broken bytes: not retried
        session.add_failures([records[i].path for i in broken], [records[i].known.key for i in broken],
                             [records[i].known.reason for i in broken], stats(broken))
        summary.unchanged += len(batch.unchanged)


CAST_PIECE = 32767  # elements: below torch's grain size (32,768), so a piece is cast on this thread alone


def _as_stored(codes: dict, dtype) -> dict:
    """The codes cast to the cache's dtype by torch: numpy's float32-to-float16 cast is many times
    slower on values below float16's normal range (6.1e-5: many, with random weights), torch's
    gives the same bits at full speed. Codes already float16 (cast on the device) are kept as they are."""
    import numpy as np
    if np.dtype(dtype) != np.float16:
        return codes
    stored = {}
    for layer, array in codes.items():
        array = np.asarray(array)
        stored[layer] = array if array.dtype == np.float16 else _to_float16(array)
    return stored


def _to_float16(array):
    """``array`` as float16, cast by torch in pieces on this thread. One cast of a whole batch is a
    parallel region of torch's OpenMP threads: on a busy machine waking them cost ~3 ms a batch of
    32 x 4096 codes (measured ~200 us an image, against ~1 us here: docs/benchmarks.md)."""
    import numpy as np
    import torch
    source = torch.from_numpy(np.ascontiguousarray(array)).reshape(-1)
    out = torch.empty(source.shape, dtype=torch.float16)
    for start in range(0, source.numel(), CAST_PIECE):
        out[start:start + CAST_PIECE].copy_(source[start:start + CAST_PIECE])
    return out.numpy().reshape(array.shape)


def _storage_errors_in_one_line(batches):
    """A StorageUnavailable raised in a decoding worker reaches here with the worker's traceback
    in its message (DataLoader re-raises it so): keep its own line."""
    from .sources.remote import StorageUnavailable
    try:
        yield from batches
    except StorageUnavailable as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        raise StorageUnavailable(lines[-1].split("StorageUnavailable: ", 1)[-1]) from None


class _NoProgress:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total, enabled):
    if not enabled:
        return _NoProgress()
    try:  # a widget in Jupyter (tqdm.auto picks it), text in a terminal; without ipywidgets
        import ipywidgets  # noqa: F401  # tqdm.auto would warn in a notebook and fall back to text
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm import tqdm
    return tqdm(total=total, unit="img", desc="extract", dynamic_ncols=True, smoothing=0.1)
