#!/usr/bin/env python
"""Start-up cost of the command line: `--help` of every verb and `info` on a small cache.

Each is a whole process (interpreter start included), timed REPEAT times; the median is printed.

    python bench/startup_bench.py CACHE.h5
"""
import argparse
import os
import subprocess
import sys
import time

from _common import cpu, timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERBS = ("extract", "info", "verify", "export", "fit", "compare", "predict", "demo")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", help="a small cache for `info`")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"CPU: {cpu()}; median of {args.repeat} whole processes")
    print(f"{'--help':<24}{timed(['--help'], args.repeat):.2f} s")
    for verb in VERBS:
        print(f"{verb + ' --help':<24}{timed([verb, '--help'], args.repeat):.2f} s")
    print(f"{'info CACHE':<24}{timed(['info', args.cache], args.repeat):.2f} s")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    print(f"{'(bare interpreter)':<24}{time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
