#!/usr/bin/env python
"""The same photos from each source, in one process: a folder, a CSV manifest, tar shards and (with
moto and s3fs installed) a local S3-compatible server on 127.0.0.1.
Prints each one's scan time and extract images/s (whole run, and the encode loop alone), and the
tar/folder ratio. A fast network (default mobilenet_v3_small, random weights) so that reading the
source, not the network, is what differs.

    python bench/sources_bench.py ../shared/data/flowers5 --limit 1000
"""
import argparse
import csv
import io
import os
import shutil
import tarfile
import tempfile
import time

from cnncodes.extract import ExtractConfig, run_extract  # noqa: E402
from cnncodes.extract.sources import scan_source  # noqa: E402
from _common import cpu, isa, subset_folder  # noqa: E402


def make_sources(photos, tmp, shard_size):
    """(folder, manifest, shard pattern) holding the same photos."""
    records = scan_source(photos).records
    manifest = os.path.join(tmp, "list.csv")
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        for r in records:
            writer.writerow([os.path.realpath(r.abspath), r.label])
    shards = os.path.join(tmp, "shards")
    os.makedirs(shards)
    count = 0
    for start in range(0, len(records), shard_size):
        with tarfile.open(os.path.join(shards, f"data-{count:06d}.tar"), "w") as tar:
            for i, r in enumerate(records[start:start + shard_size]):
                for name, data in ((f"{start + i:08d}.jpg", open(r.abspath, "rb").read()),
                                   (f"{start + i:08d}.cls", r.label.encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        count += 1
    return photos, manifest, os.path.join(shards, f"data-{{000000..{count - 1:06d}}}.tar")


def local_s3(photos):
    """moto's S3 server on 127.0.0.1 holding the photos (None without moto and s3fs)."""
    try:
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError:
        return None
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}")
    fs = s3fs.S3FileSystem()
    fs.mkdir("bench")
    for r in scan_source(photos).records:
        fs.pipe(f"bench/photos/{r.path}", open(r.abspath, "rb").read())
    return server


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--backbone", default="mobilenet_v3_small")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--shard-size", type=int, default=250, help="photos per tar shard")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each source, in a rotating order")
    args = ap.parse_args()
    print(f"machine: {cpu()} ({isa()}); {args.backbone} ({args.weights} weights), "
          f"{args.limit} photos")
    tmp, server = tempfile.mkdtemp(prefix="cnncodes-sources-"), None
    try:
        photos = os.path.join(tmp, "photos")
        subset_folder(args.data, args.limit, photos)
        sources = dict(zip(("folder", "manifest", "tar shards"), make_sources(photos, tmp, args.shard_size)))
        server = local_s3(photos)
        if server is not None:
            sources["local S3"] = "s3://bench/photos"
        rates = {name: [] for name in sources}
        print(f"{'round':<7}{'source':<12}{'scan s':>8}{'images/s':>10}{'loop images/s':>15}")
        names = list(sources)
        for round_ in range(args.rounds):  # the order rotates: a run's place in the sequence shows in its speed
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                started = time.perf_counter()
                scan_source(sources[name])
                scan = time.perf_counter() - started
                cache = os.path.join(tmp, f"{name.replace(' ', '_')}-{round_}.h5")
                s = run_extract(ExtractConfig(sources[name], cache, backbone=args.backbone, weights=args.weights,
                                              progress=False))
                rates[name].append(s.written / s.loop_seconds)
                print(f"{round_:<7}{name:<12}{scan:>8.3f}{s.images_per_second:>10.1f}{rates[name][-1]:>15.1f}",
                      flush=True)
        median = {name: sorted(r)[len(r) // 2] for name, r in rates.items()}
        print("median loop images/s: " + ", ".join(f"{n} {v:.1f}" for n, v in median.items()))
        print(f"tar shards / folder (median loop): {median['tar shards'] / median['folder']:.2f}")
        if "local S3" in median:
            print(f"local S3 / folder (median loop): {median['local S3'] / median['folder']:.2f}")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
