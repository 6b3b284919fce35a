"""Kill the extract's main pid (only: its decoding workers live on) at random moments and start the
same command the moment it is dead, as a scheduler or the OOM killer and a retry loop do.

    python bench/restart_bench.py ../shared/data/flowers5 --photos 600 --kills 20

Prints how many restarts were refused ("another extract is writing"), how long orphaned workers
outlived their parent, whether the final cache equals an uninterrupted run's bit for bit, and the
CPU it ran on.
"""
import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from conftest import assert_same_cache, committed_rows  # noqa: E402
from test_restarts import alive, children_of  # noqa: E402

REFUSED = "another extract is writing"


def start(data, cache, args):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "pipeline.py"), "extract", data, "--cache", cache,
                             *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def copy_photos(source, target, photos):
    """The first ``photos`` train photos of flowers5, spread over its classes."""
    train = os.path.join(source, "train")
    classes = sorted(os.listdir(train))
    per_class = -(-photos // len(classes))
    for name in classes:
        os.makedirs(os.path.join(target, name))
        for f in sorted(os.listdir(os.path.join(train, name)))[:per_class]:
            shutil.copy(os.path.join(train, name, f), os.path.join(target, name, f))


def cpu():
    with open("/proc/cpuinfo") as f:
        text = f.read()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = "avx512_bf16" if "avx512_bf16" in text else "avx2" if "avx2" in text else "no avx2"
    return f"{os.cpu_count()} cores {model}, {flags}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flowers5")
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    args = parser.parse_args()
    run = ["--backbone", args.backbone, "--workers", "2", "--shard-rows", "32", "--batch-size", "16", "--no-progress"]
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        copy_photos(args.flowers5, data, args.photos)
        clean, killed = os.path.join(tmp, "clean.h5"), os.path.join(tmp, "killed.h5")
        t0 = time.perf_counter()
        assert start(data, clean, run).wait() == 0
        print(f"clean run: {time.perf_counter() - t0:.1f} s")
        rng = random.Random(args.seed)
        refused, orphans, linger = 0, 0, []
        proc = start(data, killed, run)
        for _ in range(args.kills):
            if rng.random() < 0.2:  # any moment of start-up (imports, model build, first batches)
                time.sleep(rng.uniform(0.0, 3.0))
            else:  # mid-loop: some rows after the last kill's, during decoding, a commit or a merge
                target, deadline = committed_rows(killed) + rng.randint(1, 64), time.time() + 60
                while proc.poll() is None and committed_rows(killed) < target and time.time() < deadline:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.3))
            workers = children_of(proc.pid)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            dead, proc, died = proc, start(data, killed, run), time.time()
            while any(alive(p) for p in workers) and time.time() < died + 30:
                time.sleep(0.01)
            orphans += len(workers)
            if workers:
                linger.append(time.time() - died)
            err = dead.stderr.read()
            refused += dead.returncode == 2 and REFUSED in err
        err = proc.communicate()[1]
        refused += proc.returncode == 2 and REFUSED in err
        final = start(data, killed, run)
        final_rc, final_err = final.wait(), final.stderr.read()
        assert final_rc == 0, final_err
        print(f"{args.kills} kills of the main pid, each restarted at once: {refused} restarts refused; "
              f"{sum(1 for _ in linger)} kills left {orphans} orphaned workers, all gone within {max(linger, default=0):.2f} s of their parent "
              f"(median {sorted(linger)[len(linger) // 2] if linger else 0:.2f} s); {committed_rows(killed)} rows")
        assert_same_cache(clean, killed)
        print(f"final cache equals the uninterrupted run's, bit for bit ({args.photos} photos, {args.backbone})")
        print(f"CPU: {cpu()}")


if __name__ == "__main__":
    main()
