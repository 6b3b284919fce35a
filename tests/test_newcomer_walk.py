"""The newcomer's first hour as one walk (issue 47): the wheel installed in a venv of its own, the
`cnncodes` command it puts on the PATH, and every next command the tool prints run as printed:
demo, rank, extract, info, verify, compare, select, label, extract, fit, predict, export-model, the
.onnx predicting, serve. Nothing is written where the walk did not say."""
import csv
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request

import pytest

from conftest import ROOT, make_folder

pytestmark = pytest.mark.slow


def _installed_from_the_wheel(tmp_path) -> str:
    """The `cnncodes` command of a venv holding the wheel built from this tree. Its dependencies
    (torch and the rest) come from the running environment through a .pth line, so nothing is
    downloaded; the package itself is the wheel's, not this checkout."""
    import shutil
    source, dist, venv = tmp_path / "src", tmp_path / "dist", tmp_path / "venv"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__",
                                                                 "build", "dist"))
    subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_wheel({str(dist)!r})"],
                   cwd=source, check=True, capture_output=True)
    (wheel,) = dist.glob("cnncodes-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import cnncodes; print(cnncodes.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert where.startswith(str(venv)), where  # the wheel's package, not the checkout's
    return str(venv / "bin" / "cnncodes")


def test_a_newcomers_walk_through_the_installed_command(tmp_path):
    command = _installed_from_the_wheel(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args, expect=0):
        done = subprocess.run([command, *map(str, args)], cwd=work, capture_output=True, text=True, env=env,
                              timeout=600)
        assert done.returncode == expect, f"cnncodes {' '.join(map(str, args))} exited {done.returncode}:\n{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout

    def as_printed(line):
        words = shlex.split(line)
        assert words[0] == "cnncodes", line
        return run(*words[1:])

    assert "report.html" in run("demo", "--out", "demo", "--classifiers", "centroid,logreg")  # the README's first step

    make_folder(str(work / "photos"), per_class=8)
    out = run("rank", "photos", "--backbones", "efficientnet_lite0", "--sample", "15", "--crop-size", "64",
              "--caches", "rank", "--workers", "0")
    (next_command,) = re.findall(r"^next \(extracts only the photos outside the sample\): (.+)$", out, re.M)
    assert "wrote 9, skipped 15" in as_printed(next_command)

    photos = sorted(p.relative_to(work / "photos").as_posix() for p in (work / "photos").rglob("*.jpg"))
    with open(work / "photos" / "m.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label")] + [(p, p.split("/")[0] if i % 3 else "")
                                                        for i, p in enumerate(photos)])
    run("extract", "photos/m.csv", "--cache", "c.h5", "--backbone", "efficientnet_lite0", "--crop-size", "64",
        "--workers", "0")
    assert "unlabeled 8" in run("info", "c.h5")
    fingerprint = json.loads(run("info", "c.h5", "--json"))["fingerprint"]  # JSON all the way down
    assert isinstance(fingerprint["preprocess"], dict) and isinstance(fingerprint["split_policy"], dict)
    assert run("verify", "c.h5").strip().endswith("ok")
    assert "report.html" in run("compare", "c.h5", "--report", "report")

    out = run("select", "c.h5", "--budget", "3", "--out", "photos/next.csv")
    (label_then,) = re.findall(r"`(cnncodes extract [^`]+)`", out)
    with open(work / "photos" / "next.csv", newline="") as f:
        picked = list(csv.DictReader(f))
    with open(work / "photos" / "next.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label")] + [(r["path"], r["path"].split("/")[0]) for r in picked])
    assert "3 relabelled by the source" in as_printed(label_then)

    run("fit", "c.h5", "--classifier", "logreg", "--model", "m.npz")
    one = f"photos/{photos[0]}"
    assert one in run("predict", "m.npz", one)
    run("export-model", "m.npz", "--out", "m.onnx")
    assert one in run("predict", "m.onnx", one)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([command, "serve", "m.onnx", "--port", str(port)], cwd=work, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, healthy = time.monotonic() + 120, False
        while time.monotonic() < deadline and not healthy:
            try:
                healthy = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                time.sleep(0.5)
        assert healthy
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert sorted(os.listdir(work)) == ["c.h5", "c.h5.shards", "demo", "m.npz", "m.onnx", "photos", "rank", "report"]
