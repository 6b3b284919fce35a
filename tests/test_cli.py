"""The command line as users meet it: the console command, help from the registries, export, the demo."""
import json
import os
import shutil
import sys

import numpy as np
import pytest

from cnncodes.cache import open_cache
from conftest import FAST_VGG, ROOT, make_folder, run_cli


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One small cache shared by the tests that only read it."""
    image_folder = tmp_path_factory.mktemp("images")
    make_folder(str(image_folder))
    path = tmp_path_factory.mktemp("cache") / "c.h5"
    (image_folder / "red" / "broken.jpg").write_bytes(b"nope")
    run_cli("extract", image_folder, "--cache", path, *FAST_VGG, "--layer", "fc7,pool5")
    return path


def test_export_parquet_round_trip(cache, tmp_path):
    import pyarrow.parquet as pq
    out = tmp_path / "codes.parquet"
    run_cli("export", cache, "--out", out, "--layer", "pool5")
    table = pq.read_table(out)
    with open_cache(cache) as c:
        assert table.column("path").to_pylist() == c.paths
        assert table.column("key").to_pylist() == c.keys
        assert table.column("split").to_pylist() == c.splits.tolist()
        assert table.column("label").to_pylist() == [c.class_names[i] for i in c.labels]
        codes = np.stack(table.column("code").to_numpy(zero_copy_only=False))
        np.testing.assert_array_equal(codes, c.codes("pool5"))
    assert table.schema.field("code").type.list_size == 512
    assert table.schema.metadata[b"cnncodes_layer"] == b"pool5"


def test_export_npy_round_trip(cache, tmp_path):
    import pyarrow.parquet as pq
    out = tmp_path / "npy"
    run_cli("export", cache, "--out", out, "--format", "npy")
    codes = np.load(out / "codes.npy")
    meta = pq.read_table(out / "metadata.parquet")
    with open_cache(cache) as c:
        np.testing.assert_array_equal(codes, c.codes("fc7"))
        assert meta.column("path").to_pylist() == c.paths and meta.num_rows == len(c)
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def console_command():
    found = shutil.which("cnncodes", path=os.path.dirname(sys.executable))
    if found is None:
        pytest.skip("the cnncodes console command is installed by `pip install -e .` (the README's commands)")
    return found


def test_console_command_has_the_same_verbs(cache):
    import subprocess
    command = console_command()
    helped = subprocess.run([command, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: cnncodes")
    for verb in ("extract", "info", "verify", "export", "fit", "compare", "predict", "demo"):
        assert verb in helped.stdout
    info = subprocess.run([command, "info", str(cache), "--json"], capture_output=True, text=True)
    assert info.returncode == 0 and json.loads(info.stdout)["rows"] == 18


def test_help_lists_come_from_the_registries():
    from cnncodes.classify.registry import CLASSIFIERS
    from cnncodes.extract.backbones import BACKBONES
    extract_help = run_cli("extract", "--help").stdout
    for name, spec in BACKBONES.items():
        assert name in extract_help and all(layer in extract_help for layer in spec.layers)
    fit_help = run_cli("fit", "--help").stdout
    assert all(name in fit_help for name in CLASSIFIERS)
    wrong = run_cli("fit", "x.h5", "--classifier", "nope", check=False)
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr


def test_help_and_info_import_no_torch(cache):
    import subprocess
    probe = ("import sys; from cnncodes import cli; sys.argv = ['cnncodes', 'info', sys.argv[1]]; code = cli.main(); "
             "heavy = [m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules]; print(heavy); sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", probe, str(cache)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip().endswith("[]"), out.stdout + out.stderr


def test_demo_runs_on_the_shipped_real_photos(tmp_path):
    out = run_cli("demo", "--out", tmp_path / "demo", "--classifiers", "centroid,logreg", "--no-progress")
    assert "real photos" in out.stdout and "wrote 200" in out.stdout
    assert "reported split: val (50 rows)" in out.stdout
    report = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    results = report if isinstance(report, list) else report["results"]
    assert max(r["accuracy"] for r in results) > 0.6  # real ImageNet features on real photos, not chance (0.2)
    best = max(results, key=lambda r: (r["accuracy"], r["balanced_accuracy"]))
    if best["mistakes"]:  # the misclassified photos, drawn from the shipped folder
        assert (tmp_path / "demo" / "report" / "mistakes.png").stat().st_size > 0
        assert "![misclassified photos](mistakes.png)" in (tmp_path / "demo" / "report" / "report.md").read_text()


def test_stage_two_refusals_are_one_line_and_bugs_keep_their_traceback(image_folder, tmp_path, monkeypatch, capsys):
    import pytest

    from cnncodes import cli
    from cnncodes.classify import ClassifyError
    cache = tmp_path / "c.h5"
    run_cli("extract", image_folder, "--cache", cache, *FAST_VGG)
    assert cli.main(["fit", str(cache), "--max-memory", "lots"]) == 2  # a user's mistake: one line
    assert capsys.readouterr().err.strip() == "error: --max-memory lots: give a size such as 1G, 512M or 2.5G"

    def broken(*args, **kwargs):
        raise ValueError("a bug in the report code")
    monkeypatch.setattr("cnncodes.classify.report.format_table", broken)
    with pytest.raises(ValueError, match="a bug in the report code") as caught:  # not swallowed into a line
        cli.main(["compare", str(cache), "--classifiers", "centroid", "--report", str(tmp_path / "r")])
    assert not isinstance(caught.value, ClassifyError)
