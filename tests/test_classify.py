import json
import os

import numpy as np
import pytest

from cnncodes.cache import Fingerprint, open_cache, open_for_append
from cnncodes.classify.registry import CODE_HEADS
from cnncodes.classify import CLASSIFIERS, fit_and_evaluate, read_codes, read_model_file, plan_splits, save_model
from cnncodes.classify.heads.linear import NearestCentroidClassifier
from cnncodes.classify.model_file import ModelFileError, model_meta
from cnncodes.classify.splits import SplitError
from conftest import FAST_VGG, run_cli

FINGERPRINT = Fingerprint(backbone="toy", layers=("f",), weights="random:0", preprocess={"crop": 8},
                          dtype="float32")


def codes_cache(path, X, y, splits, n_classes):
    classes = [f"c{c}" for c in range(n_classes)]
    with open_for_append(str(path), FINGERPRINT, {"f": X.shape[1]}, classes, background=False) as session:
        session.add_rows([f"c{c}/{i:05d}.jpg" for i, c in enumerate(y)], [f"k{i}" for i in range(len(y))],
                         list(splits), [f"c{c}" for c in y], [(i, i, i) for i in range(len(y))], {"f": X})
    return str(path)


def blobs(n_per_class=100, n_classes=3, dim=32, separation=3.0, seed=0, random_labels=False):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, separation, (n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = centres[y] + rng.normal(0, 1, (len(y), dim))
    if random_labels:
        y = rng.permutation(y)
    splits = rng.choice(["train", "val", "test"], size=len(y), p=[0.6, 0.2, 0.2])
    return X.astype(np.float32), y, splits


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    X, y, s = blobs()
    return read_codes(codes_cache(tmp_path_factory.mktemp("l") / "c.h5", X, y, s, 3))


@pytest.fixture(scope="module")
def random_labels(tmp_path_factory):
    X, y, s = blobs(n_per_class=200, separation=0.0, random_labels=True, seed=1)
    return read_codes(codes_cache(tmp_path_factory.mktemp("r") / "c.h5", X, y, s, 3))


@pytest.mark.parametrize("name", CODE_HEADS)
def test_each_classifier_learns_a_learnable_problem(learnable, name):
    result, model = fit_and_evaluate(learnable, name)
    assert result["eval_split"] == "test" and result["classifier"] == name
    assert result["accuracy"] >= 0.9, result
    assert set(result) >= {"accuracy", "balanced_accuracy", "macro_f1", "fit_seconds", "params", "confusion_matrix"}
    proba = model.predict_proba(learnable.X[:5])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("name", CODE_HEADS)
def test_each_classifier_is_near_chance_on_random_labels(random_labels, name):
    result, _ = fit_and_evaluate(random_labels, name)
    assert abs(result["accuracy"] - 1 / 3) < 0.12, result


@pytest.mark.parametrize("name", CODE_HEADS)
def test_model_file_round_trip_gives_identical_predictions(learnable, name, tmp_path):
    result, model = fit_and_evaluate(learnable, name)
    path = str(tmp_path / "m.npz")
    save_model(path, model, {"classifier": name, "class_names": learnable.class_names, "layer": "f",
                             "fingerprint": learnable.fingerprint})
    loaded = read_model_file(path)
    np.testing.assert_array_equal(loaded.predict(learnable.X), model.predict(learnable.X))
    np.testing.assert_allclose(loaded.predict_proba(learnable.X), model.predict_proba(learnable.X), rtol=1e-5, atol=1e-6)
    with np.load(path, allow_pickle=False) as f:  # nothing in the file needs pickle: reading an
        assert "meta" in f.files                  # object array here would raise
        assert all(f[k].dtype.kind != "O" for k in f.files)


def test_a_model_file_naming_another_class_is_refused(learnable, tmp_path):
    """The allow-list: a model file can only rebuild our estimators and scalers, never run code."""
    import json
    _, model = fit_and_evaluate(learnable, "centroid")
    path = str(tmp_path / "m.npz")
    save_model(path, model, {"classifier": "centroid", "class_names": learnable.class_names, "layer": "f",
                             "fingerprint": learnable.fingerprint})
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["steps"]["clf"]["class"] = "Popen"
    forged = str(tmp_path / "forged.npz")
    np.savez(forged, meta=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(ModelFileError, match="unknown estimator 'Popen'"):
        read_model_file(forged)


def test_split_rules():
    y = np.repeat([0, 1], 50)
    with_test = np.array(["train"] * 60 + ["val"] * 20 + ["test"] * 20)
    plan = plan_splits(with_test, y)
    assert plan.eval_split == "test" and plan.selection == "val"
    assert not (plan.eval_mask & plan.fit_mask).any() and plan.fit_mask.sum() == 80
    assert (plan.selection_fold == 0).sum() == 20  # the val rows choose, then everything not reported refits

    train_val = np.array(["train"] * 80 + ["val"] * 20)
    rng = np.random.default_rng(0)
    plan = plan_splits(rng.permutation(train_val), y)
    assert plan.eval_split == "val" and "slice of train" in plan.selection
    assert plan.fit_mask.sum() == 80 and (plan.selection_fold == 0).sum() == 16
    chosen_labels = y[plan.fit_mask][plan.selection_fold == 0]
    assert abs(chosen_labels.mean() - y[plan.fit_mask].mean()) < 0.1  # stratified
    again = plan_splits(rng.permutation(train_val), y)
    assert plan_splits(train_val, y).selection_fold.tolist() == plan_splits(train_val, y).selection_fold.tolist()
    assert again.eval_split == "val"

    train_test = np.array(["train"] * 80 + ["test"] * 20)
    plan = plan_splits(train_test, y)
    assert plan.eval_split == "test" and "slice of train" in plan.selection
    with pytest.raises(SplitError):
        plan_splits(np.array(["train"] * 100), y)


def test_hyper_parameters_never_see_the_reported_split(tmp_path):
    X, y, s = blobs(separation=1.0)
    data = read_codes(codes_cache(tmp_path / "c.h5", X, y, s, 3))
    result, _ = fit_and_evaluate(data, "logreg")
    X2 = X.copy()
    X2[s == "test"] = np.random.default_rng(5).normal(0, 1, X2[s == "test"].shape)  # scramble only the reported rows
    data2 = read_codes(codes_cache(tmp_path / "d.h5", X2, y, s, 3))
    result2, _ = fit_and_evaluate(data2, "logreg")
    assert result["params"] == result2["params"]
    assert result["sweep"] == result2["sweep"]


def test_fit_compare_predict_cli(image_folder, tmp_path):
    cache = tmp_path / "c.h5"
    run_cli("extract", image_folder, "--cache", cache, *FAST_VGG)
    model = tmp_path / "m.npz"
    fit = json.loads(run_cli("fit", cache, "--classifier", "logreg", "--model", model, "--json").stdout)
    for key in ("classifier", "eval_split", "accuracy", "balanced_accuracy", "macro_f1", "fit_seconds", "params"):
        assert key in fit
    report = tmp_path / "report"
    out = run_cli("compare", cache, "--report", report, "--classifiers", "logreg,centroid,knn")
    assert "reported split:" in out.stdout and "centroid" in out.stdout
    for name in ("report.md", "report.json", "confusion.png", "accuracy.png"):
        assert (report / name).stat().st_size > 0
    compared = json.loads(run_cli("compare", cache, "--report", report, "--classifiers", "centroid", "--json").stdout)
    assert compared["best"] == compared["results"][0]["classifier"] == "centroid"

    (image_folder / "bad.jpg").write_bytes(b"nope")
    partly = run_cli("predict", model, image_folder, image_folder / "bad.jpg", "--top-k", "2", "--json", check=False)
    assert partly.returncode == 3 and "bad.jpg" in partly.stderr  # some images failed: docs/cli.md's exit codes
    answer = json.loads(partly.stdout)
    preds = answer["predictions"]
    assert len(preds) == 18 and {f["path"] for f in answer["failures"]} == {str(image_folder / "bad.jpg")}
    assert set(preds[0]) == {"path", "label", "probability", "top_k"} and len(preds[0]["top_k"]) == 2
    # The rebuilt extractor reproduces the cached codes: predictions equal the model on the cache.
    loaded = read_model_file(str(model))
    with open_cache(str(cache)) as c:
        expected = {os.path.join(str(image_folder), p): c.class_names[k]
                    for p, k in zip(c.paths, loaded.predict(c.codes()))}
    assert {p["path"]: p["label"] for p in preds} == expected
    csv = run_cli("predict", model, image_folder / "red", "--csv").stdout.splitlines()
    assert csv[0].startswith("path,label1,probability1") and len(csv) == 7


def test_predict_labels_real_photos(flowers5, tmp_path):
    data = tmp_path / "few"
    held_out = []
    for cls in ("daisy", "sunflowers"):
        for split, per in [("train", 30), ("val", 6)]:
            src = os.path.join(flowers5, split, cls)
            os.makedirs(data / split / cls)
            for name in sorted(os.listdir(src))[:per]:
                os.symlink(os.path.join(src, name), data / split / cls / name)
        src = os.path.join(flowers5, "val", cls)
        held_out += [(os.path.join(src, n), cls) for n in sorted(os.listdir(src))[10:15]]
    cache = tmp_path / "c.h5"
    run_cli("extract", data, "--cache", cache, "--backbone", "efficientnet_lite0", "--no-progress", "--workers", "0")
    model = tmp_path / "m.npz"
    run_cli("fit", cache, "--model", model)
    preds = json.loads(run_cli("predict", model, *[p for p, _ in held_out], "--json").stdout)["predictions"]
    correct = sum(p["label"] == cls for p, (_, cls) in zip(preds, held_out))
    assert correct >= 8, preds  # 10 unseen photos of two very different flowers


def _logistic_objective(coef, intercept, X, y_idx, C):
    """scikit-learn's LogisticRegression objective: C * summed cross-entropy + ||W||^2 / 2."""
    z = X.astype(np.float64) @ coef.T + intercept
    z -= z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return C * -log_p[np.arange(len(y_idx)), y_idx].sum() + 0.5 * float((coef ** 2).sum())


def test_sweep_solver_equals_scikit_learn_at_every_C_on_real_codes(flowers5, tmp_path):
    """The batched solver against LogisticRegression at each C of logreg's grid, on the same scaled
    flowers5 codes and the same stopping tolerance: the same optimum (objective), the same
    held-out probabilities. Selection is tested apart (below), on synthetic rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from cnncodes.classify.registry import LOG_C
    from cnncodes.classify.heads.sweep import LogisticSweepCV
    from cnncodes.extract import ExtractConfig, run_extract
    data = tmp_path / "f5"
    for split, per_class in (("train", 120), ("val", 40)):  # 600 photos to fit, 200 held out
        for cls in sorted(os.listdir(os.path.join(flowers5, split))):
            os.makedirs(data / split / cls)
            for name in sorted(os.listdir(os.path.join(flowers5, split, cls)))[:per_class]:
                os.symlink(os.path.join(flowers5, split, cls, name), data / split / cls / name)
    cache = str(tmp_path / "c.h5")
    run_extract(ExtractConfig(str(data), cache, backbone="efficientnet_lite0", progress=False,
                              precision="fp32"))  # the solver under test, on the same codes on every CPU
    codes = read_codes(cache, "avgpool")
    plan = plan_splits(codes.splits, codes.y, 0)
    scaler = StandardScaler().fit(codes.X[plan.fit_mask])
    X, y = scaler.transform(codes.X[plan.fit_mask]).astype(np.float32), codes.y[plan.fit_mask]
    held_out = scaler.transform(codes.X[plan.eval_mask]).astype(np.float32)
    for C in LOG_C:
        ours = LogisticSweepCV(grid=(C,)).fit(X, y)
        theirs = LogisticRegression(C=C, max_iter=1000).fit(X, y)  # both stop at a gradient of 1e-4
        f_ours = _logistic_objective(ours.coef_, ours.intercept_, X, y, C)
        f_theirs = _logistic_objective(theirs.coef_, theirs.intercept_, X, y, C)
        assert abs(f_ours - f_theirs) <= 1e-4 * f_theirs, (C, f_ours, f_theirs)  # measured <= 4e-6
        p_ours, p_theirs = ours.predict_proba(held_out), theirs.predict_proba(held_out)
        assert np.abs(p_ours - p_theirs).max() <= 5e-3, C                         # measured <= 7e-4
        assert (p_ours.argmax(axis=1) == p_theirs.argmax(axis=1)).mean() >= 0.99, C


def test_sweep_scores_every_C_as_grid_search_does_and_keeps_the_first_best(tmp_path):
    """Model selection, apart from the solver: on rows where weak regularisation overfits (8
    informative of 300 dimensions), logreg's selection accuracy of each C equals GridSearchCV's on
    the same selection rows (within a row: the fold solvers stop at a looser tolerance), and the
    chosen C is the first best of those scores."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.preprocessing import StandardScaler
    from cnncodes.classify.heads.lbfgs import SWEEP_TOL_FACTOR
    from cnncodes.classify.registry import LOG_C
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 300)
    centres = np.zeros((3, 300))
    centres[:, :8] = rng.normal(0, 1.0, (3, 8))
    X = (centres[y] + rng.normal(0, 1, (len(y), 300))).astype(np.float32)
    splits = rng.choice(["train", "val", "test"], size=len(y), p=[0.6, 0.2, 0.2])
    codes = read_codes(codes_cache(tmp_path / "c.h5", X, y, splits, 3))
    ours, _ = fit_and_evaluate(codes, "logreg")
    plan = plan_splits(codes.splits, codes.y, 0)
    (_, selection), = plan.sweep_split()
    # The sweep's fold solvers stop at SWEEP_TOL_FACTOR times the refit's tolerance: so do these.
    clf = LogisticRegression(max_iter=1000, tol=1e-4 * SWEEP_TOL_FACTOR)
    # logreg scales with the statistics of every fit row, before its sweep (unsupervised, as a
    # model trained on all of them will see): so do these.
    scaled = StandardScaler().fit_transform(codes.X[plan.fit_mask])
    search = GridSearchCV(clf, {"C": LOG_C}, cv=plan.sweep_split(), scoring="accuracy")
    search.fit(scaled, codes.y[plan.fit_mask])
    scores = np.array([s["selection_accuracy"] for s in ours["sweep"]])
    assert [s["params"]["C"] for s in ours["sweep"]] == LOG_C
    assert np.abs(scores - search.cv_results_["mean_test_score"]).max() <= 1 / len(selection) + 1e-9
    assert ours["params"]["C"] == LOG_C[int(np.argmax(scores))]
    assert scores.max() - scores.min() >= 0.1  # the grid matters on these rows: underfit to overfit


def test_report_lists_mistakes_and_says_when_photos_are_gone(random_labels, tmp_path):
    from cnncodes.classify.report import write_report
    data = random_labels  # plenty of mistakes; its rows have no photos on disk
    results = [fit_and_evaluate(data, "centroid")[0]]
    mistakes = results[0]["mistakes"]
    assert mistakes and all(m["true"] != m["predicted"] for m in mistakes)
    assert [m["probability"] for m in mistakes] == sorted((m["probability"] for m in mistakes), reverse=True)
    paths = write_report(str(tmp_path / "r"), results, data, {"cache": "x", "backbone": "toy", "weights": "w",
                                                              "scaling": "standard", "seed": 0})
    text = open(paths["report.md"]).read()
    assert "no thumbnails could be drawn" in text and "mistakes.png" not in paths
    assert f"`{mistakes[0]['path']}`" in text


def test_max_memory_subsamples_rows_and_says_so(tmp_path):
    X, y, s = blobs()  # 300 rows x 32 float32
    cache = codes_cache(tmp_path / "c.h5", X, y, s, 3)
    out = run_cli("fit", cache, "--classifier", "centroid", "--max-memory", "40K", "--json")
    result = json.loads(out.stdout)
    fitting = 40 * 1024 // (32 * 4 * 3)  # rows whose float32 codes fit three times in 40 KiB
    assert (result["rows_used"], result["rows_total"]) == (fitting, 300)
    assert f"seeded random subsample of {fitting} rows" in out.stderr
    assert result["n_fit"] + result["n_eval"] == fitting and result["accuracy"] > 0.8
    whole = json.loads(run_cli("fit", cache, "--classifier", "centroid", "--json").stdout)
    assert whole["rows_used"] == whole["rows_total"] == 300
    wrong = run_cli("fit", cache, "--max-memory", "lots", check=False)
    assert wrong.returncode == 2 and "give a size such as 1G" in wrong.stderr


def test_stream_loads_cover_each_row_once_within_the_budget(tmp_path):
    from cnncodes.classify.stream import CodeStream
    X, y, s = blobs(n_per_class=3000, dim=16)  # 9,000 rows, stored class by class
    stream = CodeStream(codes_cache(tmp_path / "c.h5", X, y, s, 3), "f", 200 << 10)
    assert stream.load_rows < 9000 // 4
    mask = s != "test"
    seen = []
    for rows, codes in stream.loads(mask, np.random.default_rng(0)):
        assert len(rows) <= stream.load_rows and codes.dtype == np.float32
        np.testing.assert_array_equal(codes, X[rows])
        seen.append(rows)
    assert sorted(np.concatenate(seen).tolist()) == np.flatnonzero(mask).tolist()
    in_order = np.concatenate([rows for rows, _ in stream.loads(mask)])
    assert in_order.tolist() == np.flatnonzero(mask).tolist()
    batches = list(stream.minibatches(mask, lambda x: x, y, 64, np.random.default_rng(0)))
    assert sum(len(b) for _, b in batches) == mask.sum()
    assert max(len(set(b.tolist())) for _, b in batches[:3]) > 1  # shuffled: not one class at a time


def test_max_memory_streams_the_linear_heads_over_every_row(tmp_path):
    X, y, s = blobs(n_per_class=400, dim=32)  # 1,200 rows: 150 kB of float32 codes
    cache = codes_cache(tmp_path / "c.h5", X, y, s, 3)
    model_path = str(tmp_path / "m.cnnmodel")
    out = run_cli("fit", cache, "--classifier", "logreg", "--max-memory", "100K", "--json", "--model", model_path)
    result = json.loads(out.stdout)
    assert result["memory"].startswith("every row, streamed") and result["rows_used"] == result["rows_total"] == 1200
    assert "logreg and linear stream every row" in out.stderr
    assert result["accuracy"] > 0.9 and len(result["sweep"]) == len(CLASSIFIERS["logreg"].grid["C"])
    whole = json.loads(run_cli("fit", cache, "--classifier", "logreg", "--json").stdout)
    assert whole["memory"] == "all rows in memory" and abs(whole["accuracy"] - result["accuracy"]) < 0.05
    data = read_codes(cache)
    model = read_model_file(model_path)
    assert model.predict(data.X[:20]).shape == (20,)


def test_every_cached_layer_is_used_side_by_side_by_default(tmp_path):
    from cnncodes.classify.stream import CodeStream
    X, y, s = blobs(n_per_class=50, dim=8)
    G = np.random.default_rng(1).normal(size=(len(y), 3)).astype(np.float32)
    fingerprint = Fingerprint(backbone="toy", layers=("f", "g"), weights="random:0", preprocess={"crop": 8},
                              dtype="float32")
    path = str(tmp_path / "two.h5")
    with open_for_append(path, fingerprint, {"f": 8, "g": 3}, ["c0", "c1", "c2"], background=False) as session:
        session.add_rows([f"{i}.jpg" for i in range(len(y))], [f"k{i}" for i in range(len(y))], list(s),
                         [f"c{c}" for c in y], [(i, i, i) for i in range(len(y))], {"f": X, "g": G})
    both = read_codes(path)
    assert both.layer == "f+g" and np.array_equal(both.X, np.concatenate([X, G], axis=1))
    assert np.array_equal(read_codes(path, "g").X, G) and read_codes(path, "g,f").X.shape == (150, 11)
    streamed = np.concatenate([codes for _, codes in CodeStream(path, "f+g", 4 << 10).loads(np.ones(150, bool))])
    np.testing.assert_array_equal(streamed, both.X)


def test_sweep_solver_runs_the_same_on_numpy_and_torch():
    """One solver, written against the array API: numpy (the CPU's) and torch (the GPU's) reach the
    same heads from the same start."""
    import torch
    from cnncodes.classify.heads.lbfgs import _Heads, batched_lbfgs, to_numpy
    X, y, _ = blobs(n_per_class=100, dim=24, separation=1.0)
    lambdas = np.array([1e-1, 1e-2, 1e-3], dtype=np.float32)
    p = 24 * 3 + 3
    on_numpy, numpy_iterations = batched_lbfgs(_Heads(X, y, 3, lambdas), np.zeros((3, p), np.float32))
    heads = _Heads(torch.from_numpy(X), torch.from_numpy(y), 3, torch.from_numpy(lambdas))
    on_torch, torch_iterations = batched_lbfgs(heads, torch.zeros(3, p))
    assert isinstance(on_numpy, np.ndarray) and isinstance(on_torch, torch.Tensor)
    assert (numpy_iterations > 3).all() and (torch_iterations > 3).all()
    objective_numpy = _Heads(X, y, 3, lambdas).forward(on_numpy)[0]
    objective_torch = to_numpy(heads.forward(on_torch)[0])
    np.testing.assert_allclose(objective_numpy, objective_torch, rtol=1e-4)
    np.testing.assert_allclose(on_numpy, to_numpy(on_torch), atol=2e-2)


def test_fitting_the_linear_heads_on_the_cpu_never_imports_torch(learnable):
    """torch's import is a third of a whole `fit --classifier logreg` on 2 cores: the full-batch
    solver runs on numpy where there is no GPU, and nothing else on that path imports torch."""
    import subprocess
    import sys
    code = ("import sys, cnncodes.classify.heads.lbfgs as lbfgs; lbfgs._nvidia_driver = lambda: False\n"
            "from cnncodes.classify import read_codes, fit_and_evaluate, save_model\n"
            f"data = read_codes({learnable.path!r})\n"
            "for name in ('logreg', 'linear', 'svm', 'ridge', 'centroid', 'knn'):\n"
            "    result, model = fit_and_evaluate(data, name)\n"
            "    assert result['accuracy'] > 0.9, (name, result['accuracy'])\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_compare_skips_a_classifier_that_cannot_fit_and_reports_why(learnable, tmp_path, monkeypatch):
    from sklearn.base import BaseEstimator, ClassifierMixin
    from cnncodes.classify import compare
    from cnncodes.classify.registry import ClassifierSpec
    from cnncodes.classify.report import format_table, write_report

    class NeedsMoreRows(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            raise ValueError(f"needs 10,000 rows, got {len(X)}")

    monkeypatch.setitem(CLASSIFIERS, "picky", ClassifierSpec("picky", NeedsMoreRows))
    seen = []
    results = compare(learnable, ["centroid", "picky", "logreg"], on_result=seen.append)
    assert [r["classifier"] for r in results] == [r["classifier"] for r in seen] == ["centroid", "picky", "logreg"]
    assert results[1] == {"classifier": "picky", "skipped": f"needs 10,000 rows, got {results[0]['n_fit']}"}
    assert results[2]["accuracy"] > 0.9
    table = format_table(results).splitlines()
    assert table[-1].split()[:2] == ["picky", "skipped"] and "needs 10,000 rows" in table[-1]
    paths = write_report(str(tmp_path / "r"), results, learnable, {"cache": "x", "backbone": "toy", "weights": "w",
                                                                   "scaling": "standard", "seed": 0})
    assert "| picky | skipped |" in open(paths["report.md"]).read()
    assert json.load(open(paths["report.json"]))["results"][1]["skipped"].startswith("needs 10,000 rows")
    with pytest.raises(ValueError, match="no classifier could fit these codes: picky: needs 10,000 rows"):
        compare(learnable, ["picky"])


@pytest.mark.parametrize("name", ["logreg", "ensemble"])
def test_model_files_written_before_the_estimator_redesign_still_predict_the_same(name):
    """tests/data holds model files written by the code before stage two became one estimator per
    entry (LogisticPathClassifier, the hand-written SoftVote), with their predictions then."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    expected = json.load(open(os.path.join(folder, "model-format2-expected.json")))
    model = read_model_file(os.path.join(folder, f"model-format2-{name}.npz"))
    X = np.asarray(expected["X"], dtype=np.float32)
    np.testing.assert_allclose(model.predict_proba(X), expected["proba"][name], atol=1e-6)
    assert model.predict_names(X)[:3] == [model.class_names[int(i)] for i in np.argmax(expected["proba"][name],
                                                                                         axis=1)[:3]]


def test_logistic_sweep_cv_scores_folds_as_grid_search_does():
    """LogisticSweepCV over k folds: cv_results_ shaped as GridSearchCV's, and its choice within a
    grid step of LogisticRegression's in GridSearchCV on the same folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from cnncodes.classify.heads.sweep import LogisticSweepCV
    X, y, _ = blobs(n_per_class=60, dim=12, separation=0.6)
    grid = [float(c) for c in np.logspace(-4, 1, 6)]
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    ours = LogisticSweepCV(grid=grid, cv=folds, device="cpu").fit(X, y)
    theirs = GridSearchCV(LogisticRegression(max_iter=1000), {"C": grid}, cv=folds).fit(X, y)
    assert [p["C"] for p in ours.cv_results_["params"]] == grid
    assert ours.cv_results_["mean_test_score"].shape == (6,) and "split2_test_score" in ours.cv_results_
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"], atol=0.04)
    assert abs(grid.index(ours.best_params_["C"]) - grid.index(theirs.best_params_["C"])) <= 1
    with pytest.raises(ValueError, match="no training rows"):
        LogisticSweepCV(grid=grid, cv=[(np.flatnonzero(y != 2), np.flatnonzero(y == 2))]).fit(X, y)


class ShrunkCentroids(NearestCentroidClassifier):
    """A head this test adds: one class (module level, as a model file names its class)."""


def test_a_head_is_one_class_and_one_registry_entry(learnable, tmp_path, monkeypatch):
    """Registered once, a new head fits, is saved and loaded back by its model file (the allow-list
    comes from the registry) and exports as a graph (its entry says how), with nothing else edited."""
    import torch
    from cnncodes.classify.deploy.onnx_export import head_module
    from cnncodes.classify.registry import ClassifierSpec
    monkeypatch.setitem(CLASSIFIERS, "shrunk", ClassifierSpec("shrunk", ShrunkCentroids, description="test head"))
    result, model = fit_and_evaluate(learnable, "shrunk")
    assert result["accuracy"] > 0.9
    path = str(tmp_path / "m.npz")
    save_model(path, model, model_meta("shrunk", result, learnable))
    loaded = read_model_file(path)
    assert type(loaded.pipeline.named_steps["clf"]) is ShrunkCentroids
    np.testing.assert_allclose(loaded.predict_proba(learnable.X), model.predict_proba(learnable.X), rtol=1e-6)
    with torch.no_grad():
        graph = head_module(model)(torch.as_tensor(learnable.X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(graph, model.predict_proba(learnable.X), atol=1e-5)
