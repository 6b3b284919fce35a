"""`import cnncodes`: one installed name, the workflow in Python, and the command line over it."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cnncodes
from conftest import FAST_VGG, ROOT, run_cli

LITE = ["--backbone", "efficientnet_lite0", "--crop-size", "64", "--no-progress", "--workers", "0",
        "--batch-size", "4"]


@pytest.fixture(scope="module")
def lite_cache(tmp_path_factory):
    """Eighteen tinted photos in class folders, train/val/test from their content, Lite0 codes."""
    from conftest import make_folder
    root = tmp_path_factory.mktemp("api")
    make_folder(str(root / "images"), per_class=8)
    cache = root / "c.h5"
    run_cli("extract", root / "images", "--cache", cache, *LITE)
    return root, cache


def test_import_cnncodes_imports_no_torch_and_names_its_version():
    probe = ("import sys, cnncodes; heavy = [m for m in ('torch', 'sklearn', 'torchvision') if m in sys.modules]; "
             "print(cnncodes.__version__, heavy)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip().endswith("[]"), out.stdout + out.stderr
    from importlib.metadata import version
    assert cnncodes.__version__ == version("cnncodes") == out.stdout.split()[0]
    assert run_cli("--version", check=False).stdout.strip() == f"cnncodes {version('cnncodes')}"
    assert {"extract_codes", "load_codes", "fit", "compare", "audit", "Encoder", "Model"} <= set(dir(cnncodes))


def test_a_folder_of_generic_module_names_shadows_nothing(tmp_path):
    """A notebook's folder holding pipeline.py, extract.py, cache.py and classify.py (each raising on
    import) breaks neither `import cnncodes` nor the command: nothing of ours goes by those names."""
    for name in ("pipeline", "extract", "cache", "classify"):
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('the user\\'s own {name}.py was imported')\n")
    probe = ("import cnncodes, cnncodes.extract.runner, cnncodes.classify.evaluate, cnncodes.cache; "
             "print(len(cnncodes.list_backbones('resnet1*')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and int(out.stdout) >= 2, out.stderr
    command = shutil.which("cnncodes", path=os.path.dirname(sys.executable))
    assert command, "the console script is installed beside this interpreter"
    helped = subprocess.run([command, "backbones", "resnet1*"], capture_output=True, text=True, cwd=tmp_path)
    assert helped.returncode == 0 and "resnet18" in helped.stdout, helped.stderr
    module = subprocess.run([sys.executable, "-m", "cnncodes", "--version"], capture_output=True, text=True,
                            cwd=tmp_path)
    assert module.stdout.startswith("cnncodes "), module.stderr


def test_fit_in_python_equals_fit_on_the_command_line(lite_cache, tmp_path):
    root, cache = lite_cache
    model = cnncodes.fit(str(cache), "logreg")
    cli = json.loads(run_cli("fit", cache, "--classifier", "logreg", "--json", "--model", tmp_path / "m.npz").stdout)
    for key in ("accuracy", "params", "n_fit", "n_eval", "confusion_matrix", "sweep"):
        assert model.result[key] == cli[key], key
    images = [str(root / "images")]
    ours, failures = model.predict_images(images)
    theirs = json.loads(run_cli("predict", tmp_path / "m.npz", *images, "--json").stdout)["predictions"]
    assert not failures and [(p["path"], p["label"]) for p in ours] == [(p["path"], p["label"]) for p in theirs]
    np.testing.assert_allclose([p["probability"] for p in ours], [p["probability"] for p in theirs], rtol=1e-6)
    loaded = cnncodes.load_model(model.save(tmp_path / "again.npz"))
    codes = cnncodes.load_codes(str(cache))
    assert loaded.predict(codes.X) == model.predict(codes.X) and repr(loaded).startswith("Model(logreg")
    table = cnncodes.compare(codes, "centroid,logreg")
    assert [r["classifier"] for r in table] == ["centroid", "logreg"] and "logreg" in table.table()
    assert os.path.isfile(table.write_report(tmp_path / "report")["report.md"])


def test_audit_in_python_equals_audit_on_the_command_line(lite_cache, tmp_path):
    """The command line's defaults by construction: the cache's first layer and its calibrated
    threshold, and the leaks' effect on the score (loading every layer used to give neither)."""
    _, cache = lite_cache
    ours = cnncodes.audit(str(cache))
    theirs = json.loads(run_cli("audit", cache, "--json", "--report", tmp_path / "r").stdout)
    assert ours.layer == theirs["layer"] == "avgpool" and ours.threshold == theirs["threshold"]
    assert theirs["report"]["audit.md"].endswith("audit.md")
    assert json.loads(json.dumps(ours.to_dict(), default=str)) == theirs | {"report": None}
    limited = json.loads(run_cli("audit", cache, "--json", "--limit", "2", "--report", tmp_path / "r2").stdout)
    former = json.loads(run_cli("audit", cache, "--json", "--top", "2", "--report", tmp_path / "r3").stdout)
    assert limited | {"report": None} == former | {"report": None} and 0 < len(limited["outliers"]) == 2 < len(
        theirs["outliers"])


def test_encoder_gives_a_caches_codes_for_paths_and_pil_images(image_folder, tmp_path):
    from PIL import Image
    cache = tmp_path / "c.h5"
    run_cli("extract", image_folder, "--cache", cache, *FAST_VGG, "--layer", "fc7", "--dtype", "float32")
    with cnncodes.open_cache(str(cache)) as c:
        stored = dict(zip(c.paths, c.codes("fc7")))
    encoder = cnncodes.Encoder("vgg16", "fc7", weights="random", crop_size=32, batch_size=4)
    paths = sorted(stored)[:5]
    codes = encoder.encode([str(image_folder / p) for p in paths])
    assert codes.shape == (5, 4096) and codes.dtype == np.float32
    assert all(np.array_equal(codes[i], stored[p]) for i, p in enumerate(paths))
    with Image.open(image_folder / paths[0]) as img:
        one = encoder.encode(img.copy())  # one PIL image alone: one row
    assert one.shape == (4096,) and np.array_equal(one, stored[paths[0]])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg"):
        encoder.encode([str(bad)])


def _count_encoded(monkeypatch):
    """A list that grows by the number of images each extract run sends through the network."""
    from cnncodes.extract.extractor import Extractor
    seen, encode = [], Extractor.encode

    def counting(self, records, *args, **kwargs):
        records = list(records)
        seen.append(len(records))
        return encode(self, records, *args, **kwargs)
    monkeypatch.setattr(Extractor, "encode", counting)
    return seen


def test_cross_validation_over_photos_runs_the_network_once_per_photo(image_folder, tmp_path, monkeypatch):
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    paths = sorted(str(p) for p in image_folder.rglob("*.jpg"))
    y = [os.path.basename(os.path.dirname(p)) for p in paths]
    codes = cnncodes.CodesTransformer(cache=str(tmp_path / "t.h5"), weights="random", crop_size=32, batch_size=4,
                                      layer="fc7")
    assert clone(codes).get_params() == codes.get_params() and clone(codes).set_params(layer="fc6").layer == "fc6"
    seen = _count_encoded(monkeypatch)
    pipe = make_pipeline(codes, LogisticRegression(max_iter=500))
    scores = cross_val_score(pipe, paths, y, cv=5)
    assert len(scores) == 5 and sum(seen) == len(paths)  # 18 photos, 5 folds x (fit + score): once each
    seen.clear()
    GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0]}, cv=3).fit(paths, y)
    assert sum(seen) == 0  # every photo's codes are in the cache already
    from cnncodes import cache as cache_room
    opened, real_open = [], cache_room.open_cache
    monkeypatch.setattr(cache_room, "open_cache", lambda path: opened.append(path) or real_open(path))
    GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0]}, cv=3).fit(paths, y)
    assert opened == []  # a version of the cache is read once a process: a fold with nothing new opens no file
    X = codes.fit_transform(paths[::-1])  # input order, whatever the cache's
    with cnncodes.open_cache(str(tmp_path / "t.h5")) as c:
        stored = dict(zip(c.paths, c.codes("fc7")))
    assert X.shape == (len(paths), 4096) and all(np.array_equal(X[i], stored[p]) for i, p in enumerate(paths[::-1]))
    other = cnncodes.CodesTransformer(cache=str(tmp_path / "t.h5"), backbone="resnet18", weights="random",
                                      crop_size=32)
    with pytest.raises(Exception, match="resnet18|backbone") as refused:
        other.fit_transform(paths[:2])
    assert "\n" not in str(refused.value)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.jpg"):
        codes.transform([str(broken)])
    # that extract committed a new version (its failure recorded): the rows are looked up again
    assert opened and all(np.array_equal(x, stored[p]) for x, p in zip(codes.transform(paths), paths))


def test_loaded_codes_name_their_rows_and_become_a_dataframe(lite_cache):
    _, cache = lite_cache
    codes = cnncodes.load_codes(str(cache), "avgpool")
    with cnncodes.open_cache(str(cache)) as c:
        assert codes.paths == c.paths
    frame = codes.to_pandas()
    assert list(frame.columns) == ["path", "label", "split", "codes"] and len(frame) == len(codes.y) == 24
    assert set(frame["label"]) == {"red", "green", "blue"} and frame["codes"][0].shape == (codes.X.shape[1],)
    np.testing.assert_array_equal(np.stack(frame["codes"]), codes.X)


def test_a_fit_result_is_typed_and_its_json_is_what_the_command_line_prints(lite_cache, tmp_path):
    _, cache = lite_cache
    model = cnncodes.fit(str(cache), "logreg")
    result = model.result
    assert isinstance(result, cnncodes.FitResult) and result.classifier == "logreg"
    assert 0.0 <= result.accuracy_ci95[0] <= result.accuracy <= result.accuracy_ci95[1] <= 1.0
    cli = json.loads(run_cli("fit", cache, "--classifier", "logreg", "--json", "--model", tmp_path / "m.npz").stdout)
    mine = json.loads(json.dumps(result.to_dict()))
    cli.pop("model")
    mine.pop("fit_seconds"), cli.pop("fit_seconds")
    assert list(mine) == list(cli) and mine == cli  # same keys, same order, same values
    assert "eval_correct" not in mine and "p_vs_best" not in mine  # internal; only compare tests pairs
    loaded = cnncodes.load_model(tmp_path / "m.npz").result
    assert isinstance(loaded, cnncodes.FitResult) and loaded.accuracy == cli["accuracy"]
    assert loaded.sweep == [] and loaded.mistakes == []  # a model file keeps the result without them
    table = cnncodes.compare(str(cache), "centroid,logreg")
    assert all(r.compared and r.p_vs_best is None or r.p_vs_best >= 0 for r in table)
    assert [set(r) >= {"p_vs_best", "indistinguishable_from_best"} for r in table.to_dict()["results"]] == [True, True]
    report = open(table.write_report(tmp_path / "report")["report.md"]).read()
    logreg = next(r for r in table if r.classifier == "logreg")
    assert f"logreg on {logreg.selection}" in report and "centroid: none to choose" in report  # said of every head


def test_streamed_codes_have_no_X_but_two_doors(lite_cache):
    from cnncodes.classify import ClassifyError
    _, cache = lite_cache
    held = cnncodes.load_codes(str(cache))
    streamed = cnncodes.load_codes(str(cache), max_memory=held.X.nbytes // 3)
    assert streamed.streamed and not held.streamed
    with pytest.raises(ClassifyError, match="streamed; take .in_memory"):
        streamed.X
    sub = streamed.in_memory()
    assert not sub.streamed and 0 < len(sub.X) < len(held.X)
    np.testing.assert_array_equal(sub.X, held.X[sub.rows])
    rows = streamed.codes_of(np.ones(len(held.y), dtype=bool))
    np.testing.assert_array_equal(np.concatenate([codes for _, codes in rows.loads()]), held.X)
