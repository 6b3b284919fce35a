"""`audit`: planted copies and flips in real photos are found; honest numbers in fit and compare."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import make_folder, run_cli

LITE = ["--backbone", "efficientnet_lite0", "--no-progress", "--workers", "0"]


@pytest.fixture(scope="module")
def planted(flowers5, tmp_path_factory):
    """Twenty photos per class and split (train, val) of flowers5, plus planted trouble:
    exact copies (one within train, one from train into val), near copies (JPEG at quality 60,
    resized, mirrored; two of them into val) and label flips (a train photo filed again under
    another class)."""
    root = tmp_path_factory.mktemp("audit")
    data = root / "data"
    photos = {}
    for split in ("train", "val"):
        for cls in sorted(os.listdir(os.path.join(flowers5, split))):
            os.makedirs(data / split / cls)
            for name in sorted(os.listdir(os.path.join(flowers5, split, cls)))[:20]:
                shutil.copy(os.path.join(flowers5, split, cls, name), data / split / cls / name)
                photos.setdefault((split, cls), []).append(name)
    classes = sorted({cls for _, cls in photos})
    a, b = classes[0], classes[1]
    plant = {}
    # exact copies: byte-identical under other names
    shutil.copy(data / "train" / a / photos["train", a][0], data / "train" / a / "copy-exact.jpg")
    shutil.copy(data / "train" / b / photos["train", b][0], data / "val" / b / "leak-exact.jpg")
    plant["exact"] = [f"train/{a}/copy-exact.jpg", f"val/{b}/leak-exact.jpg"]
    # near copies
    with Image.open(data / "train" / a / photos["train", a][1]) as img:
        img.convert("RGB").save(data / "val" / a / "leak-jpeg.jpg", quality=60)
    with Image.open(data / "train" / b / photos["train", b][1]) as img:
        img = img.convert("RGB")
        img.resize((img.width * 4 // 5, img.height * 4 // 5)).save(data / "val" / b / "leak-resized.jpg", quality=95)
    with Image.open(data / "train" / classes[2] / photos["train", classes[2]][1]) as img:
        ImageOps.mirror(img.convert("RGB")).save(data / "train" / classes[2] / "mirrored.jpg", quality=95)
    plant["near"] = [f"val/{a}/leak-jpeg.jpg", f"val/{b}/leak-resized.jpg", f"train/{classes[2]}/mirrored.jpg"]
    # label flips: photos of one class filed (moved) under another
    flips = []
    # daisy, dandelion, roses, sunflowers, tulips: each filed under a class that looks unlike it
    pairs = [(classes[3], classes[2]), (classes[2], classes[1]), (classes[1], classes[4]), (classes[0], classes[3])]
    for k, (src, dst) in enumerate(pairs):
        name = photos["train", src][5 + k]
        shutil.move(data / "train" / src / name, data / "train" / dst / f"flip-{name}")
        flips.append(f"train/{dst}/flip-{name}")
    plant["flips"] = flips
    cache = root / "c.h5"
    run_cli("extract", data, "--cache", cache, *LITE)
    return data, cache, plant, root


def test_audit_finds_the_planted_copies_leaks_and_flips(planted):
    data, cache, plant, root = planted
    report = root / "report"
    out = run_cli("audit", cache, "--report", report, "--json")
    found = json.loads(out.stdout)
    assert found["threshold"] == 0.90 and found["layer"] == "avgpool" and "calibrated" in found["threshold_source"]
    exact_paths = {r["path"] for g in found["exact_duplicates"] for r in g["rows"]}
    assert set(plant["exact"]) <= exact_paths
    assert found["counts"]["exact_crossing_splits"] >= 1  # the one filed into val
    near_paths = {r["path"] for p in found["near_duplicates"] for r in p["rows"]}
    assert set(plant["near"]) <= near_paths, sorted(near_paths)
    for leak in ("leak-exact.jpg", "leak-jpeg.jpg", "leak-resized.jpg"):
        assert any(p.endswith(leak) for p in found["leaked"])
    ranked = [r["path"] for r in found["label_issues"]]
    ranks = sorted(ranked.index(f) if f in ranked else len(ranked) for f in plant["flips"])
    assert ranks[2] < 12, (ranks, ranked[:12])  # at least three of the four flips among the first twelve
    assert "cleanlab" in found["label_rule"]
    effect = found["effect_on_score"]
    assert effect["n_eval"] - effect["n_without_leaked"] == len(found["leaked"])
    assert 0.0 <= effect["accuracy_without_leaked"] <= 1.0
    assert {f for f in plant["flips"] if f in ranked} <= set(found["exclude"])
    text = (report / "audit.md").read_text()
    assert "## Near duplicates" in text and "pairs.png" in text and (report / "pairs.png").stat().st_size > 0
    assert (report / "label_errors.png").stat().st_size > 0 and (report / "outliers.png").stat().st_size > 0

    # The human-readable run, then fit with the audit's exclusions.
    lines = run_cli("audit", cache, "--report", report).stdout
    assert "leaks: " in lines and "likely label errors: " in lines and "accuracy (logreg)" in lines
    fit = run_cli("fit", cache, "--classifier", "logreg", "--exclude", report / "audit.json", "--json")
    result = json.loads(fit.stdout)
    kept_in_val = sum(p.startswith("val/") for p in found["exclude"])
    assert result["excluded"] == len(found["exclude"]) - kept_in_val and "left out of training and selection" in fit.stderr
    dropped = json.loads(run_cli("fit", cache, "--classifier", "logreg", "--exclude", report / "audit.json",
                                 "--exclude-reported", "--json").stdout)
    assert dropped["excluded"] == len(found["exclude"]) and dropped["n_eval"] == result["n_eval"] - kept_in_val


def test_audit_says_in_one_line_what_it_cannot_do(planted, tmp_path):
    data, cache, plant, root = planted
    tiny = tmp_path / "tiny"
    make_folder(str(tiny), per_class=1, classes=("red",))
    one = tmp_path / "one.h5"
    run_cli("extract", tiny, "--cache", one, "--weights", "random", "--crop-size", "32", "--no-progress",
            "--workers", "0")
    out = run_cli("audit", one, "--report", tmp_path / "r", check=False)
    assert out.returncode == 2 and "an audit needs at least two" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1

    # One class, photos gone: the audit still runs, with a generic threshold, and says what it skipped.
    flat = tmp_path / "flat"
    make_folder(str(flat), per_class=6, classes=("red",))
    single = tmp_path / "single.h5"
    run_cli("extract", flat, "--cache", single, "--weights", "random", "--crop-size", "32", "--no-progress",
            "--workers", "0")
    shutil.rmtree(flat)
    out = run_cli("audit", single, "--report", tmp_path / "r2")
    assert "a generic default" in out.stdout and "no labels to check" in out.stdout
    assert "Traceback" not in out.stderr


def test_confident_learning_rule_flags_confident_disagreement():
    from cnncodes.classify.audit import confident_learning
    y = np.array([0, 0, 0, 1, 1, 1])
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9],   # row 2: labelled 0, confidently 1
                      [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])  # row 5: labelled 1, but 0 is above 0's threshold?
    flagged = confident_learning(y, proba)
    assert flagged[0] == 2 and 0 not in flagged and 3 not in flagged


def test_every_accuracy_has_its_interval_and_compare_says_what_ties_the_best(tmp_path):
    from cnncodes.classify.stats import mcnemar_p, wilson_interval
    low, high = wilson_interval(45, 50)
    assert low < 0.9 < high and round(high - low, 2) == 0.17  # 0.786-0.957: the demo's 50 val photos
    assert mcnemar_p([1] * 10, [1] * 10) == 1.0
    assert mcnemar_p([1] * 10 + [0] * 0, [0] * 10) < 0.01 and mcnemar_p([1, 1, 0], [1, 0, 1]) == 1.0
    data = tmp_path / "d"
    make_folder(str(data), per_class=20)
    cache = tmp_path / "c.h5"
    run_cli("extract", data, "--cache", cache, "--weights", "random", "--crop-size", "32", "--no-progress",
            "--workers", "0")
    out = run_cli("compare", cache, "--classifiers", "centroid,logreg,seed", "--report", tmp_path / "r", "--json")
    results = json.loads(out.stdout)["results"]
    for r in results:
        assert r["accuracy_ci95"][0] <= r["accuracy"] <= r["accuracy_ci95"][1]
        assert "eval_correct" not in r
    best = max(results, key=lambda r: (r["accuracy"], r["balanced_accuracy"]))
    assert best["p_vs_best"] is None and all(r["p_vs_best"] is not None for r in results if r is not best)
    table = run_cli("compare", cache, "--classifiers", "centroid,logreg", "--report", tmp_path / "r").stdout
    assert "95% CI" in table and "vs best" in table and "McNemar" in table


def test_augmented_views_are_not_duplicates_and_the_audit_reads_centre_rows(tmp_path):
    """A cache with --views: each train image has two augmented rows, copies by construction; the
    audit counts photos, not rows, and finds only the planted copy."""
    data = tmp_path / "d"
    make_folder(str(data), per_class=8)
    shutil.copy(data / "red" / "0000.jpg", data / "red" / "again.jpg")
    cache = tmp_path / "v.h5"
    run_cli("extract", data, "--cache", cache, "--weights", "random", "--crop-size", "32", "--no-progress",
            "--workers", "0", "--views", "2")
    found = json.loads(run_cli("audit", cache, "--report", tmp_path / "r", "--json", "--threshold", "0.999").stdout)
    assert found["photos"] == 25
    assert [sorted(r["path"] for r in g["rows"]) for g in found["exact_duplicates"]] == [["red/0000.jpg",
                                                                                           "red/again.jpg"]]
    assert all(p["rows"][0]["path"] != p["rows"][1]["path"] for p in found["near_duplicates"])  # no view vs its photo


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16"])
def test_cells_find_the_pairs_the_exact_products_find(monkeypatch, bf16):
    """Past EXACT_ROWS the comparisons are confined to k-means cells: on clustered codes with
    planted copies they find the same pairs as the exact products, with the same float32 cosines
    (the cells' bf16 products, where the CPU has them, only choose the pairs to check), and close
    distances (bf16's within its rounding)."""
    from cnncodes import cpu_features
    from cnncodes.classify.audit import near_pairs as nb
    monkeypatch.setattr(cpu_features, "native_bf16", lambda: bf16)  # bf16 emulated where the CPU lacks it
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (5, 64))
    X = centres[rng.integers(0, 5, 600)] + rng.normal(0, 1.0, (600, 64))
    X[500:520] = X[:20] + rng.normal(0, 0.02, (20, 64))  # twenty planted near copies
    exact_pairs, exact_knn, how, kind = nb.neighbours(X, 0.99, 5)
    assert how.startswith("exact")
    monkeypatch.setattr(nb, "EXACT_ROWS", 100)
    cell_pairs, cell_knn, how, kind = nb.neighbours(X, 0.99, 5)
    assert how.startswith("in cells: 49 k-means cells")
    assert how.endswith("products in bf16, pairs near the threshold checked in float32") == bf16
    assert {(i, j) for i, j, _ in exact_pairs} == {(i, j) for i, j, _ in cell_pairs} >= {(i, 500 + i) for i in range(20)}
    np.testing.assert_allclose(sorted(s for *_, s in cell_pairs), sorted(s for *_, s in exact_pairs), atol=1e-6)
    assert [s for *_, s in cell_pairs] == sorted((s for *_, s in cell_pairs), reverse=True)
    # a cell holds only some of the neighbours: never nearer (bf16's distances within its rounding)
    assert np.all(cell_knn >= exact_knn - (nb.COARSE_MARGIN if bf16 else 1e-6))
    assert np.median(cell_knn - exact_knn) < 0.02


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16"])
def test_cells_find_every_pair_of_a_crowd_of_copies(monkeypatch, bf16):
    """A photo with more near copies than the bf16 search ranks per row (PAIR_RANKS): its whole row
    is read, and every pair among the copies is found, as the exact products find them."""
    from cnncodes import cpu_features
    from cnncodes.classify.audit import near_pairs as nb
    monkeypatch.setattr(cpu_features, "native_bf16", lambda: bf16)
    rng = np.random.default_rng(3)
    X = rng.normal(0, 1, (400, 32))
    crowd = nb.PAIR_RANKS + 9
    X[100:100 + crowd] = X[0] + rng.normal(0, 0.01, (crowd, 32))  # row 0 and its copies: pairs among all of them
    exact_pairs, _, how, _ = nb.neighbours(X, 0.99, 5)
    assert how.startswith("exact") and len(exact_pairs) == (crowd + 1) * crowd // 2
    monkeypatch.setattr(nb, "EXACT_ROWS", 100)
    cell_pairs, _, how, _ = nb.neighbours(X, 0.99, 5)
    assert how.startswith("in cells")
    assert {(i, j) for i, j, _ in cell_pairs} == {(i, j) for i, j, _ in exact_pairs}


def test_label_check_past_the_fit_cap_still_ranks_the_flips_first(monkeypatch):
    """Past AUDIT_FIT_ROWS each fold's head trains on a stratified sample of its rows: every row
    still gets out-of-sample probabilities, and planted flips still rank first."""
    from cnncodes.classify import audit as audit_module
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 900)
    X = (np.eye(3)[y] * 3 + rng.normal(0, 1, (900, 3))).astype(np.float32)
    X = np.hstack([X, rng.normal(0, 1, (900, 13)).astype(np.float32)])
    flipped = np.arange(0, 900, 90)
    given = y.copy()
    given[flipped] = (y[flipped] + 1) % 3
    monkeypatch.setattr(audit_module, "AUDIT_FIT_ROWS", 200)
    ranked, proba, _ = audit_module.label_issues(X, given, seed=0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert set(ranked[:len(flipped)].tolist()) == set(flipped.tolist())


def test_the_effect_on_the_score_past_the_fit_cap_trains_on_a_sample(planted, monkeypatch):
    """Past AUDIT_FIT_ROWS training rows the leak's effect is measured with a model trained on a
    sample of them: the reported rows are all there, and both accuracies come from it."""
    from cnncodes.classify import audit as audit_module
    from cnncodes.classify.data import read_codes
    data, cache, plant, root = planted
    codes = read_codes(str(cache), "avgpool")
    leaked = [p for p in plant["exact"] + plant["near"] if p.startswith("val/")]
    full = audit_module.effect_on_score(codes, leaked)
    monkeypatch.setattr(audit_module, "AUDIT_FIT_ROWS", 40)
    sampled = audit_module.effect_on_score(codes, leaked)
    assert full["trained_on"] == full["training_rows"] == sampled["training_rows"] > 40 >= sampled["trained_on"] > 30
    assert sampled["n_eval"] == full["n_eval"] and sampled["n_without_leaked"] == full["n_without_leaked"]
    assert sampled["n_eval"] - sampled["n_without_leaked"] == len(leaked)
    assert 0.0 <= sampled["accuracy_without_leaked"] <= 1.0


def test_the_label_check_forks_no_process(monkeypatch):
    """cleanlab's default forks a multiprocessing pool; a fork of a process with threads running can
    deadlock in the child (an audit hung under pytest-xdist). The check runs in this process."""
    pytest.importorskip("cleanlab")
    import multiprocessing.pool
    from cnncodes.classify import audit as audit_module

    def refuse(*args, **kwargs):
        raise AssertionError("the label check started a process pool")
    monkeypatch.setattr(multiprocessing.pool.Pool, "__init__", refuse)
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 120)
    X = (np.eye(3)[y] * 3 + rng.normal(0, 1, (120, 3))).astype(np.float32)
    ranked, _, method = audit_module.label_issues(X, y, seed=0)
    assert method.startswith("cleanlab.") and ranked.dtype == np.int64


def test_the_calibrated_thresholds_are_data_with_their_measurements():
    import json
    from cnncodes.classify.audit import CALIBRATED, GENERIC_THRESHOLD, THRESHOLDS_FILE, default_threshold
    with open(THRESHOLDS_FILE) as f:
        table = json.load(f)
    assert len(CALIBRATED) == len(table["calibrated"]) >= 3 and GENERIC_THRESHOLD == table["generic"]
    for key, entry in table["calibrated"].items():
        assert 0.5 < entry["threshold"] < 1 and 0 < entry["recall"] <= 1 and entry["photos"] > 0, key
        backbone, layer = key.split("/", 1)
        assert default_threshold(backbone, layer) == (entry["threshold"], f"calibrated for {backbone} {layer} "
                                                                          "on planted copies")
    assert default_threshold("vgg16", "fc7")[0] == GENERIC_THRESHOLD


@pytest.mark.parametrize("budget", [256 << 20, 100_000, 20_000, 651_468])  # one block, grids of many;
# 651,468 bytes: blocks of 233 rows, the last one a single row (fewer than k)
def test_each_pair_once_equals_every_row_against_every_row(budget):
    """The exact search computes the upper triangle of blocks only, and merges a row's k nearest
    from both sides of each block: the same pairs and distances as comparing every row with all."""
    from cnncodes.classify.audit import near_pairs as nb
    rng = np.random.default_rng(1)
    X = rng.normal(0, 1, (4, 48))[rng.integers(0, 4, 700)] + rng.normal(0, 1.0, (700, 48))
    X[600:630] = X[:30] + rng.normal(0, 0.05, (30, 48))
    X[650] = X[651]  # an exact copy: cosine 1
    take = lambda rows: X[rows]  # noqa: E731
    full_pairs, full_knn = {}, np.zeros(700, np.float32)
    nb._compare(take, 700, np.arange(700), np.arange(700), 0.97, 5, budget, full_pairs, full_knn)
    half_pairs, half_knn = {}, np.zeros(700, np.float32)
    nb._compare_all(take, 700, 0.97, 5, budget, half_pairs, half_knn)
    assert set(half_pairs) == set(full_pairs) >= {(i, 600 + i) for i in range(30)} | {(650, 651)}
    np.testing.assert_allclose([half_pairs[p] for p in full_pairs], list(full_pairs.values()), atol=1e-6)
    np.testing.assert_allclose(half_knn, full_knn, atol=1e-6)
