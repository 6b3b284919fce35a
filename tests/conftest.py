import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from PIL import Image

# Under pytest-xdist the test processes share the cores: one torch thread each, and in the runs
# they start, so no thread waits spinning on a core another process needs (set before torch loads).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# torch.compile's kernel cache, one per CPU code path: inductor's cache key misses ATen's and
# oneDNN's ISA caps, and a kernel cached by a run under ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
# (the AVX2 machines' fp32 path, CONTRIBUTING.md) aborted the next uncapped run when loaded from a shared cache.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), "cnncodes-inductor-" + "-".join(
        os.environ.get(name, "native").lower() for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"))))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOWERS5 = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "flowers5"))


def make_image(path, seed, size=(48, 40), tint=(0, 0, 0), mode="RGB", fmt=None):
    """A random image whose mean colour is shifted by tint (so classes are learnable)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 160, size=(size[1], size[0], 3)).astype(np.int32) + np.array(tint)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, format=fmt)
    return path


TINTS = {"red": (90, 0, 0), "green": (0, 90, 0), "blue": (0, 0, 90)}


def make_folder(root, per_class=6, classes=("red", "green", "blue"), split=None, start=0):
    """root/<class>/<i>.jpg (or root/<split>/<class>/<i>.jpg) with tinted random images."""
    paths = []
    for c, name in enumerate(classes):
        for i in range(start, start + per_class):
            base = os.path.join(root, split, name) if split else os.path.join(root, name)
            paths.append(make_image(os.path.join(base, f"{i:04d}.jpg"), seed=1000 * c + i, tint=TINTS.get(name, (0, 0, 0))))
    return paths


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "images"
    make_folder(str(root))
    return root


@pytest.fixture(scope="session")
def flowers5():
    if not os.path.isdir(FLOWERS5):
        pytest.skip(f"real photos not present at {FLOWERS5} (a clone outside the cnncodes workspace lacks them)")
    return FLOWERS5


def start_cli(*args, env=None):
    """Start pipeline.py as a process of its own without waiting (to kill or signal it), with
    Popen's interface and text output: forked from a server that did the torch imports once
    (tests/forked_cli.py), or a fresh interpreter when CNNCODES_TEST_SUBPROCESS=1."""
    args = [str(a) for a in args]
    if os.environ.get("CNNCODES_TEST_SUBPROCESS") == "1":
        return subprocess.Popen([sys.executable, os.path.join(ROOT, "pipeline.py"), *args], cwd=ROOT,
                                env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    from forked_cli import ForkedCli
    return ForkedCli(args, env or {}, ROOT)


def run_cli(*args, check=True):
    """Run the command line and return a CompletedProcess with text output. In this process
    (`cli.main(argv)`: no interpreter and torch start-up per call), except for runs that
    start a Ray cluster (kept out of the test process) or when CNNCODES_TEST_SUBPROCESS=1.
    Tests that kill or signal a run use start_cli."""
    args = [str(a) for a in args]
    if os.environ.get("CNNCODES_TEST_SUBPROCESS") == "1" or "ray" in args:
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "pipeline.py"), *args],
                              capture_output=True, text=True, cwd=ROOT)
    else:
        proc = _run_in_process(args)
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline.py {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def _run_in_process(args):
    """cli.main(args) with its output captured and its exit status as a process would give
    it: argparse's exit code, 1 and the traceback for an uncaught exception."""
    import contextlib
    import io
    import traceback
    from cnncodes import cli
    out, err, cwd = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(cwd)
    return subprocess.CompletedProcess(["pipeline.py", *args], code or 0, out.getvalue(), err.getvalue())


# Small, fast VGG16 settings for mechanics tests: random weights, 32-pixel inputs.
FAST_VGG = ("--weights", "random", "--crop-size", "32", "--no-progress", "--workers", "0", "--batch-size", "4")


def committed_rows(cache):
    """Rows and failures the cache file lists now (it is replaced atomically, so always readable)."""
    import h5py
    try:
        with h5py.File(cache, "r") as f:
            return int(f.attrs.get("n_rows", 0)) + len(f["failed/paths"])
    except (OSError, KeyError):
        return 0


def assert_same_cache(a, b):
    """Two caches hold the same rows: paths, keys, labels, splits, classes, failures, codes bit for bit."""
    from cnncodes.cache import open_cache
    with open_cache(a) as x, open_cache(b) as y:
        assert x.paths == y.paths and x.keys == y.keys and x.class_names == y.class_names
        assert x.labels.tolist() == y.labels.tolist() and x.splits.tolist() == y.splits.tolist()
        assert x.failures == y.failures and x.views.tolist() == y.views.tolist()
        for layer in x.layers:
            np.testing.assert_array_equal(x.codes(layer), y.codes(layer))
