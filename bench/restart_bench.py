"""Kill the extract's main pid (only: its decoding workers live on) at random moments and start the
same command the moment it is dead, as a scheduler or the OOM killer and a retry loop do.

    PYTHONPATH=tests python bench/restart_bench.py ../shared/data/flowers5 --photos 600 --kills 20

(It reuses the tests' kill campaign, tests/test_restarts.py: hence tests/ on PYTHONPATH.)

Prints how many restarts were refused ("another extract is writing"), how long orphaned workers
outlived their parent, whether the final cache equals an uninterrupted run's bit for bit, and the
CPU it ran on.
"""
import argparse
import os
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from conftest import assert_same_cache, committed_rows, run_cli  # noqa: E402
from test_restarts import kill_and_restart  # noqa: E402

from _common import cpu, isa, subset_folder  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flowers5")
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    args = parser.parse_args()
    options = ["--backbone", args.backbone, "--workers", "2", "--shard-rows", "32", "--batch-size", "16", "--no-progress"]
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        subset_folder(args.flowers5, args.photos, data)
        clean, killed = os.path.join(tmp, "clean.h5"), os.path.join(tmp, "killed.h5")
        t0 = time.perf_counter()
        run_cli("extract", data, "--cache", clean, *options)
        print(f"clean run: {time.perf_counter() - t0:.1f} s")
        run = kill_and_restart(killed, ["extract", data, "--cache", killed, *options], args.kills, args.seed,
                               settle=30, rows_step=64, delay=0.3, startup_share=0.2)
        run_cli("extract", data, "--cache", killed, *options)  # to the end, if the last restart was refused
        outlived = sorted(run.outlived)
        print(f"{args.kills} kills of the main pid, each restarted at once: {len(run.refused)} restarts refused; "
              f"{len(outlived)} kills left {run.orphans} orphaned workers, all gone within "
              f"{max(outlived, default=0):.2f} s of their parent (median {outlived[len(outlived) // 2] if outlived else 0:.2f} s); "
              f"{committed_rows(killed)} rows")
        assert_same_cache(clean, killed)
        print(f"final cache equals the uninterrupted run's, bit for bit ({args.photos} photos, {args.backbone})")
        print(f"CPU: {cpu()} ({isa()})")


if __name__ == "__main__":
    main()
