#!/usr/bin/env python
"""The pipeline's own ceiling: extract with a network of almost no cost, against decoding alone.

With the network out of the way, what is left is the pipeline itself: the decoding workers, the
batch handshakes, the main process's bookkeeping (batches, keys, splits, stat data), the codes'
copy and cast, and the commits (the cache's writer thread runs in the main process too). Printed:
- D: images/s of decoding alone, one DataLoader worker per core, no network (what a worker does:
  read, hash, decode, resize, crop);
- pipeline: images/s of `extract`'s loop (decode, encode, commit) with the bench's network;
- pipeline / D: the share of decoding's rate that the rest of the pipeline leaves (want >= 0.9);
- main us/img: CPU time of the main process (every thread: the loop, the cache's writer thread,
  torch's threads) over the loop, per image, at the decoders' pace: the writer keeps up and
  writes a segment a shard, with each one's fixed costs, on cores the decoders share. What the
  main process costs a GPU, where shards come faster than the writer takes them and join (the
  issue's goal: <= 50 us an image, a cap of 20,000 images/s), is ``--loop-ceiling``'s figure;
- steady: the same from the first batch on (the loop's start, once per run, left out: the workers'
  fork, the batch ring's shared memory), over the images after it: what caps a GPU on a long run;
- wall us/img of the main loop outside waiting for batches (the loop's time less the time it
  blocked on the DataLoader), per image.

The network (``--network``): ``identity`` (the default; bench-only: each code row is a few input
pixels repeated to the fingerprint's widths, so nothing is computed), or any backbone, e.g.
``timm:test_resnet.r160_in1k`` (timm's test models, random weights; not free on a CPU: 3-4 ms an
image here). The fingerprint (layers, widths, preprocessing) is ``--backbone``'s: VGG16 fc7 by
default, 4096 codes an image, the widest of the defaults.

    python bench/pipeline_ceiling_bench.py ../shared/data/flowers5 --limit 2000 --runs 3
    python bench/pipeline_ceiling_bench.py ../shared/data/flowers5 --profile 25
    python bench/pipeline_ceiling_bench.py ../shared/data/flowers5 --profile-writer 25
    python bench/pipeline_ceiling_bench.py --writer-alone 16 --shard-rows 512 --runs 3

``--writer-alone N``: the cache's writer alone, no extract: an AppendSession on the calling thread
takes N shards of --shard-rows rows of 4096 float16 codes (VGG16 fc7's width; ``--writer-width``),
as extract hands them over, and writes, links and merges them; printed: its CPU time per row, all
and by part (writing segments, reading merges' rows, publishing the cache file).
"""
import argparse
import os
import shutil
import tempfile
import time

import cnncodes  # noqa: F401  before torch: its OpenMP setting (cnncodes/_openmp.py) applies only then
import torch
from torch.utils.data import DataLoader

from cnncodes.extract import ExtractConfig, run_extract  # noqa: E402
from cnncodes.extract import extractor as extractor_module  # noqa: E402
from cnncodes.extract import runner  # noqa: E402
from cnncodes.extract.allocator import freed_memory_kept  # noqa: E402
from cnncodes.extract.backbones import get_backbone  # noqa: E402
from cnncodes.extract.dataset import ImageRecords, collate  # noqa: E402
from cnncodes.extract.decoding import DEFAULT_MAX_PIXELS  # noqa: E402
from cnncodes.extract.sources import scan_source  # noqa: E402
from cnncodes.extract.workers import ExitWithParent  # noqa: E402
from _common import cpu, isa, subset_folder  # noqa: E402


class Identity(torch.nn.Module):
    """{layer: [B, width]} from a few of each image's pixels: the cheapest network with the codes' shape."""

    def __init__(self, widths):
        super().__init__()
        self.widths = dict(widths)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # so .to() and parameters() behave

    def forward(self, x):
        corner = x[:, :1, 0, 0].float()  # [B, 1]: a view, expanded below (the pipeline's own cast copies it)
        return {layer: corner.expand(-1, width) for layer, width in self.widths.items()}


def decoding_alone(preprocess, folder, workers, batch, idle) -> float:
    """Images/s of the workers' whole job (read, hash, decode, transform, collate), ``workers`` of
    them; ``idle``: at the idle priority, as extract's workers run when the network is on the CPU
    (on a machine shared with other work they get only what it leaves, in both measures alike)."""
    records = scan_source(folder).records
    dataset = ImageRecords(records, preprocess.loader(DEFAULT_MAX_PIXELS))
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=collate, prefetch_factor=4,
                        worker_init_fn=ExitWithParent(yield_cores=idle))
    with freed_memory_kept():
        started = time.perf_counter()
        n = sum(len(b.indices) + len(b.failed) for b in loader)
        return n / (time.perf_counter() - started)


def thread_cpu() -> dict:
    """{thread name: CPU seconds} of this process's threads (Linux; {} elsewhere)."""
    import threading
    named = {str(t.native_id): t.name for t in threading.enumerate()}
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        out[(tid, named.get(tid, name + " (not Python's: torch, HDF5)"))] = (int(fields[11]) + int(fields[12])) / tick
    return out


class LoopMeter:
    """Wraps runner._encode_and_commit: the main process's CPU time and the wall time it spent
    waiting for the engine's batches, over the loop only."""

    def __init__(self, profile=None):
        self.cpu = self.wall = self.waiting = 0.0
        # from the first batch on: the loop's start (the decoding workers' fork, the batch ring's shared
        # memory, the loader's start: 30-150 ms once) left out, what each further image costs
        self.steady_cpu, self.first_images = 0.0, 0
        self.profile = profile  # a cProfile.Profile run around the loop only (the main thread's CPU time)
        self.threads = {}
        self.original = runner._encode_and_commit

    def __enter__(self):
        meter = self

        def measured(engine, extractor, session, pending, config, summary):
            run = engine.run

            def timed_run(ext, records):
                it = iter(run(ext, records))
                first = None
                while True:
                    started = time.perf_counter()
                    try:
                        batch = next(it)
                    except StopIteration:
                        meter.waiting += time.perf_counter() - started
                        return
                    meter.waiting += time.perf_counter() - started
                    if first is None:
                        first = meter.first_cpu = time.process_time()
                        meter.first_images += batch.count
                    yield batch
            engine.run = timed_run
            cpu0, wall0, threads0 = time.process_time(), time.perf_counter(), thread_cpu()
            try:
                if meter.profile is not None:
                    return meter.profile.runcall(meter.original, engine, extractor, session, pending, config, summary)
                return meter.original(engine, extractor, session, pending, config, summary)
            finally:
                meter.cpu += time.process_time() - cpu0
                meter.steady_cpu += time.process_time() - getattr(meter, "first_cpu", cpu0)
                meter.wall += time.perf_counter() - wall0
                for key, seconds in thread_cpu().items():
                    name = "main" if key[0] == str(os.getpid()) else key[1]
                    meter.threads[name] = meter.threads.get(name, 0.0) + seconds - threads0.get(key, 0.0)
        runner._encode_and_commit = measured
        return self

    def __exit__(self, *exc):
        runner._encode_and_commit = self.original


class WriterProfile:
    """A cProfile.Profile of the cache's writer thread: each job it does (write, link, merge, publish),
    on that thread's CPU time."""

    def __init__(self):
        import cProfile
        from cnncodes.cache import _writer_thread
        self.profile = cProfile.Profile(time.thread_time)
        self.module = _writer_thread
        self.original = _writer_thread.OrderedWriter.__init__

    def __enter__(self):
        profile, original = self.profile, self.original

        def init(writer, do, background=True, **options):
            original(writer, lambda job: profile.runcall(do, job), background, **options)
        self.module.OrderedWriter.__init__ = init
        return self

    def __exit__(self, *exc):
        self.module.OrderedWriter.__init__ = self.original


def pipeline_run(folder, tmp, args, profile=0, profile_writer=0):
    cache = os.path.join(tmp, "ceiling.h5")
    options = dict(backbone=args.backbone, weights="random", progress=False, decoder=args.decoder)
    if args.crop_size:
        options["crop_size"] = args.crop_size
    if args.batch_size:
        options["batch_size"] = args.batch_size
    if args.workers is not None:
        options["workers"] = args.workers
    if args.device:
        options["device"] = args.device
    if args.precision:
        options["precision"] = args.precision
    if args.shard_rows:
        options["shard_rows"] = args.shard_rows
    prof = None
    if profile:
        import cProfile
        import pstats
        prof = cProfile.Profile(time.thread_time)  # the main thread's CPU time in the loop, not its waits
    import contextlib
    with LoopMeter(prof) as meter, (WriterProfile() if profile_writer else contextlib.nullcontext()) as writer:
        summary = run_extract(ExtractConfig(folder, cache, **options))
    shutil.rmtree(cache + ".shards", ignore_errors=True)
    os.remove(cache)
    if profile:
        pstats.Stats(prof).sort_stats("tottime").print_stats(profile)
    if profile_writer:
        import pstats
        print("the cache's writer thread (its CPU time):")
        pstats.Stats(writer.profile).sort_stats("cumulative").print_stats(profile_writer)
    n = summary.written + summary.failed
    return n / summary.loop_seconds, meter, n


def _writer_inputs(rows, width):
    """(the writer benches' fingerprint, a shard's rows of float16 codes)."""
    import numpy as np
    from cnncodes.cache.fingerprint import Fingerprint
    fingerprint = Fingerprint(backbone="bench", layers=("codes",), weights="random:0", preprocess={"crop": 224},
                              dtype="float16", views=None, provenance={"data_root": "/photos"})
    return fingerprint, np.random.default_rng(0).standard_normal((rows, width)).astype(np.float16)


def _hand_over(session, shards, codes):
    """``shards`` shards of len(codes) rows added to ``session`` in batches of 32, as extract adds them."""
    rows = len(codes)
    for k in range(shards):
        base = k * rows
        for b in range(0, rows, 32):
            n = min(32, rows - b)
            session.add_rows([f"a/{base + b + i:08d}.jpg" for i in range(n)],
                             ["%064x" % (base + b + i) for i in range(n)], ["train"] * n, ["a"] * n,
                             [(1000 + i, 10 ** 18 + i, 5 + i) for i in range(n)], {"codes": codes[b:b + n]})
        session.commit_shard()


def writer_alone(shards, rows, width, runs):
    """CPU us per row of the cache's writer alone (see the module's doc), ``runs`` times after a warm-up."""
    from cnncodes.cache import append as append_module
    fingerprint, codes = _writer_inputs(rows, width)
    parts = {"write": "write_segment", "merge read": "read_merge_rows", "publish": "publish_manifest"}
    originals = {name: getattr(append_module, name) for name in parts.values()}

    def one(shards):
        spent = dict.fromkeys(parts, 0.0)

        def timed(part, function):
            def run(*a, **k):
                started = time.process_time()
                try:
                    return function(*a, **k)
                finally:
                    spent[part] += time.process_time() - started
            return run
        for part, name in parts.items():
            setattr(append_module, name, timed(part, originals[name]))
        tmp = tempfile.mkdtemp(prefix="cnncodes-writer-")
        try:
            started = time.process_time()
            with append_module.open_for_append(os.path.join(tmp, "w.h5"), fingerprint, {"codes": width}, ["a"],
                                               background=False) as session:
                _hand_over(session, shards, codes)
            total = time.process_time() - started
        finally:
            for name, function in originals.items():
                setattr(append_module, name, function)
            shutil.rmtree(tmp, ignore_errors=True)
        n = shards * rows
        return {"all": 1e6 * total / n} | {part: 1e6 * seconds / n for part, seconds in spent.items()}
    one(2)  # warm-up
    print(f"the cache's writer alone: {shards} shards of {rows} rows of {width} float16 codes; CPU us a row")
    for _ in range(runs):
        print("  ".join(f"{part} {us:.1f}" for part, us in one(shards).items()), flush=True)


def writer_ceiling(shards, rows, width, runs):
    """The main process's rate with an infinitely fast network and decoder: the calling thread hands
    N shards of ``rows`` rows to a session with its background writer, as fast as it can, as extract's
    loop does (batches of 32); printed: images/s (wall) and the process's CPU us an image (every
    thread), with shards that wait for the writer joined (group commit) and without (one segment a
    shard), alternated ``runs`` times."""
    from cnncodes.cache import append as append_module
    from cnncodes.cache._manifest import segment_folder
    fingerprint, codes = _writer_inputs(rows, width)
    joined_max = append_module.JOINED_MAX_BYTES

    def one(shards, join):
        append_module.JOINED_MAX_BYTES = joined_max if join else 0
        tmp = tempfile.mkdtemp(prefix="cnncodes-ceiling-")
        try:
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            with append_module.open_for_append(os.path.join(tmp, "w.h5"), fingerprint, {"codes": width}, ["a"]) as session:
                _hand_over(session, shards, codes)
            wall, spent = time.perf_counter() - wall_start, time.process_time() - cpu_start
            folder = segment_folder(os.path.join(tmp, "w.h5"))
            segments = len([f for f in os.listdir(folder) if f.endswith(".h5")]) if os.path.isdir(folder) else -1
        finally:
            append_module.JOINED_MAX_BYTES = joined_max
            shutil.rmtree(tmp, ignore_errors=True)
        n = shards * rows
        return n / wall, 1e6 * spent / n, segments
    one(2, True)  # warm-up
    print(f"the main process alone, an infinitely fast network: {shards} shards of {rows} rows of {width} "
          f"float16 codes handed to the background writer as fast as the loop can")
    for _ in range(runs):
        for join in (False, True):
            rate, us, segments = one(shards, join)
            print(f"  {'shards joined while they wait' if join else 'one segment a shard          '}: "
                  f"{rate:,.0f} images/s, {us:.1f} CPU us an image (all threads), {segments} segment files at "
                  f"the end", flush=True)


class InstantEngine:
    """A bench-only engine with an infinitely fast decoder and network: each batch of the run's
    records comes back at once with its float16 codes (as a GPU's encoder returns them: cast on the
    device), content keys and read times, so extract's loop and the cache's writer are all that runs."""
    name = "local"

    def __init__(self, images):
        self.keys = ["%064x" % (i * 2654435761) for i in range(images)]  # made before the loop's clock
        self.codes = None

    def compute_device(self, requested):
        return None

    POOL = 256  # batches of codes to cycle through: 64 MB of VGG16's, past the CPU's caches, as fresh codes are

    def prepare(self, extractor):
        import numpy as np
        if self.codes is not None:  # made in the warm-up run: not the measured runs' work
            return
        rng = np.random.default_rng(0)
        self.codes = {layer: rng.standard_normal((self.POOL, extractor.batch_size, width)).astype(np.float16)
                      for layer, width in extractor.widths.items()}

    def run(self, extractor, records):
        from cnncodes.extract.encoder import EncodedBatch
        size = extractor.batch_size
        for start in range(0, len(records), size):
            positions = list(range(start, min(len(records), start + size)))
            now, pool = time.time_ns(), (start // size) % self.POOL
            yield EncodedBatch(indices=positions, codes={layer: c[pool, :len(positions)] for layer, c in self.codes.items()},
                               failed=[], keys={i: self.keys[i] for i in positions}, read_ns=dict.fromkeys(positions, now),
                               start=start, count=len(positions))


def loop_ceiling(images, args):
    """extract's loop itself, the network and decoder infinitely fast (InstantEngine): a folder of
    ``images`` one-byte files scanned and planned as extract does, each batch's codes handed over at
    once; printed: images/s of the loop and the main process's CPU us an image (every thread, and by
    thread): what the main process costs a GPU whatever the GPU's rate (want <= 50 us)."""
    tmp = tempfile.mkdtemp(prefix="cnncodes-ceiling-")
    original = runner.make_engine
    try:
        folder = os.path.join(tmp, "photos")
        for c in range(5):
            os.makedirs(os.path.join(folder, f"class{c}"))
        for i in range(images):
            with open(os.path.join(folder, f"class{i % 5}", f"{i:08d}.jpg"), "wb") as f:
                f.write(b"x")
        engine = InstantEngine(images)
        runner.make_engine = lambda name, address=None: engine
        print(f"machine: {cpu()} ({isa()}); extract's loop alone, {images:,} images, fingerprint {args.backbone}, "
              f"network and decoder infinitely fast")
        for run in range(args.runs + 1):  # the first a warm-up: imports, the engine's codes, first-touched memory
            cache = os.path.join(tmp, "ceiling.h5")
            options = dict(backbone=args.backbone, weights="random", progress=False)
            if args.shard_rows:
                options["shard_rows"] = args.shard_rows
            # the whole run: the loop hands shards to the cache's writer thread, which may still be
            # writing when the loop ends (a session's close waits for it), and the scan and plan before
            # (its threads' CPU: the main thread's own, and the rest, the writer's mostly: it has
            # ended by then, so /proc no longer lists it)
            spent_cpu, main_cpu, wall = time.process_time(), time.thread_time(), time.perf_counter()
            with LoopMeter() as meter:
                summary = run_extract(ExtractConfig(folder, cache, **options))
            spent_cpu, main_cpu = time.process_time() - spent_cpu, time.thread_time() - main_cpu
            wall = time.perf_counter() - wall
            shutil.rmtree(cache + ".shards", ignore_errors=True)
            os.remove(cache)
            n = summary.written
            us = 1e6 / n
            if not run:
                continue
            print(f"  {n / wall:,.0f} images/s from start to end ({wall:.2f} s); the main process {us * spent_cpu:.1f} "
                  f"CPU us an image: its main thread {us * main_cpu:.1f} (the loop {us * meter.threads.get('main', 0.0):.1f} "
                  f"of it: batches handed over), other threads {us * (spent_cpu - main_cpu):.1f} (the cache's writer)",
                  flush=True)
    finally:
        runner.make_engine = original
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?")
    ap.add_argument("--writer-alone", type=int, default=0, metavar="N",
                    help="the cache's writer alone: N shards of --shard-rows rows (default 512), no extract")
    ap.add_argument("--writer-ceiling", type=int, default=0, metavar="N",
                    help="the main process alone with an infinitely fast network: N shards of --shard-rows rows "
                    "handed to the background writer as fast as possible, joined while they wait and not")
    ap.add_argument("--loop-ceiling", type=int, default=0, metavar="N",
                    help="extract's loop alone on N images, the network and decoder infinitely fast (InstantEngine)")
    ap.add_argument("--writer-width", type=int, default=4096, help="--writer-alone's code width (float16)")
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--backbone", default="vgg16", help="whose fingerprint, layers and preprocessing (default vgg16 fc7)")
    ap.add_argument("--network", default="identity", help="identity (bench-only, the default), or 'backbone': "
                    "--backbone's own network (give a cheap one, e.g. timm:test_resnet.r160_in1k)")
    ap.add_argument("--crop-size", type=int, default=None)
    ap.add_argument("--decoder", default="pil")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None, help="extract's decoding workers (default: its own)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--precision", default=None)
    ap.add_argument("--shard-rows", type=int, default=None, help="extract's rows per commit (default: its own)")
    ap.add_argument("--runs", type=int, default=3, help="pipeline runs (each printed, D measured around each)")
    ap.add_argument("--profile-writer", type=int, default=0, help="also print the top N functions (cumulative) of "
                    "the cache's writer thread in one profiled run (its CPU time: writing, linking, merging shards)")
    ap.add_argument("--profile", type=int, default=0, help="also print the top N functions of one profiled run "
                    "(the main thread's CPU time in extract's loop: no scan, weights or model build)")
    args = ap.parse_args()
    if args.writer_alone:
        writer_alone(args.writer_alone, args.shard_rows or 512, args.writer_width, args.runs)
        return
    if args.writer_ceiling:
        writer_ceiling(args.writer_ceiling, args.shard_rows or 512, args.writer_width, args.runs)
        return
    if args.loop_ceiling:
        loop_ceiling(args.loop_ceiling, args)
        return
    if not args.data:
        ap.error("the data folder is required (but with --writer-alone)")
    cores = len(os.sched_getaffinity(0))
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    print(f"machine: {cpu()} ({isa()}{f', oneDNN capped at {cap}' if cap else ''}), torch {torch.__version__}")
    spec = get_backbone(args.backbone)
    if args.network == "identity":
        original = extractor_module.Extractor.model

        def identity_model(self):
            if self._model is None:
                self._model = Identity(self.widths)
            return self._model
        extractor_module.Extractor.model = property(identity_model)
    preprocess = spec.preprocess.with_crop(args.crop_size) if args.crop_size else spec.preprocess
    from dataclasses import replace
    preprocess = replace(preprocess, decoder=args.decoder if args.decoder != "gpu" else "torchvision")
    tmp = tempfile.mkdtemp(prefix="cnncodes-ceiling-")
    try:
        folder = os.path.join(tmp, "photos")
        print(f"{len(subset_folder(args.data, args.limit, folder))} photos of {args.data}; fingerprint {args.backbone}, "
              f"network {args.network}, decoder {args.decoder}")
        pipeline_run(folder, tmp, args)  # warm-up: page cache, imports, first forks
        print(f"{'D img/s':>9}{'pipeline':>10}{'pipe/D':>8}{'main us/img':>13}{'steady':>8}{'busy us/img':>13}")
        best = None
        for _ in range(args.runs):
            idle = (args.device or "cpu") == "cpu" and torch.cuda.is_available() is False
            workers = args.workers if args.workers is not None else cores
            d_before = decoding_alone(preprocess, folder, workers, 32, idle)
            rate, meter, n = pipeline_run(folder, tmp, args)
            d = (d_before + decoding_alone(preprocess, folder, workers, 32, idle)) / 2
            main_us, busy_us = 1e6 * meter.cpu / n, 1e6 * (meter.wall - meter.waiting) / n
            steady_us = 1e6 * meter.steady_cpu / max(1, n - meter.first_images)
            by_thread = ", ".join(f"{name} {1e6 * s / n:.0f}" for name, s in
                                  sorted(meter.threads.items(), key=lambda kv: -kv[1]) if 1e6 * s / n >= 1)
            print(f"{d:>9.0f}{rate:>10.0f}{rate / d:>8.2f}{main_us:>13.1f}{steady_us:>8.1f}{busy_us:>13.1f}   "
                  f"threads, us/img: {by_thread}", flush=True)
            if best is None or rate / d > best[0]:
                best = (rate / d, main_us, steady_us)
        print(f"best of {args.runs}: pipeline / D {best[0]:.2f}, main process {best[1]:.1f} us an image, "
              f"{best[2]:.1f} from the first batch on, at the decoders' pace (a GPU's pace: --loop-ceiling)")
        if args.profile or args.profile_writer:
            pipeline_run(folder, tmp, args, profile=args.profile, profile_writer=args.profile_writer)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if args.network == "identity":
            extractor_module.Extractor.model = original


if __name__ == "__main__":
    main()
