"""`select`: the unlabelled photos to label next, as a manifest extract reads; labelling it and
re-extracting labels those rows and changes nothing else; --simulate measures the strategies."""
import csv
import json

import numpy as np
import pytest

import cnncodes
from cnncodes.classify.select import STRATEGIES, choose, k_center, unit
from conftest import make_folder, run_cli

LITE = ["--backbone", "efficientnet_lite0", "--crop-size", "64", "--no-progress", "--workers", "0"]


@pytest.fixture
def half_labelled(tmp_path):
    """A manifest of 24 tinted photos, every other one without its label, and its cache."""
    make_folder(str(tmp_path / "img"), per_class=8)
    paths = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "img").rglob("*.jpg"))
    truth = {p: p.split("/")[1] for p in paths}
    _write(tmp_path / "m.csv", {p: (truth[p] if i % 2 == 0 else "") for i, p in enumerate(paths)})
    run_cli("extract", tmp_path / "m.csv", "--cache", tmp_path / "c.h5", *LITE)
    return tmp_path, truth


def _write(path, labels):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(labels.items())


def _state(cache):
    """path -> (label, stored split, codes)."""
    with cnncodes.open_cache(cache) as c:
        return {p: (int(y), str(s), x.tobytes())
                for p, y, s, x in zip(c.paths, c.labels, c.splits.astype(str), c.codes(c.first_layer))}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_labelling_the_picks_and_extracting_labels_them_and_changes_nothing_else(half_labelled, strategy):
    root, truth = half_labelled
    before = _state(root / "c.h5")
    out = json.loads(run_cli("select", root / "c.h5", "--budget", "4", "--out", root / "next.csv",
                             "--strategy", strategy, "--json").stdout)
    rows = list(csv.DictReader(open(root / "next.csv")))
    picked = [r["path"] for r in rows]
    assert len(picked) == len(set(picked)) == 4 and all(r["label"] == "" for r in rows) and out["pool"] == 12
    assert all(before[p][0] < 0 for p in picked)  # unlabelled rows only
    _write(root / "next.csv", {p: truth[p] for p in picked})  # a person fills in the labels
    summary = run_cli("extract", root / "next.csv", "--cache", root / "c.h5", *LITE).stdout
    assert "wrote 0" in summary and "4 relabelled by the source (codes kept)" in summary
    after = _state(root / "c.h5")
    with cnncodes.open_cache(root / "c.h5") as c:
        names = c.class_names
    assert set(after) == set(before)
    for path, (label, split, codes) in after.items():
        if path in picked:
            assert names[label] == truth[path] and (split, codes) == before[path][1:]
        else:
            assert (label, split, codes) == before[path]


def test_bad_selections_are_one_line_and_write_nothing(half_labelled, tmp_path_factory):
    root, truth = half_labelled
    for args, words in ((["--budget", "99", "--out", root / "n.csv"], "more than the 12 unlabelled rows"),
                        (["--budget", "2", "--out", tmp_path_factory.mktemp("elsewhere") / "n.csv"],
                         "into the source's folder"),
                        (["--budget", "2", "--out", root / "n.csv", "--strategy", "psychic"], "choose auto, uncertainty")):
        out = run_cli("select", root / "c.h5", *args, check=False)
        assert out.returncode == 2 and words in out.stderr and out.stderr.strip().count("\n") == 0, out.stderr
        assert not (root / "n.csv").exists()
    _write(root / "m.csv", truth)  # every row labelled: nothing to pick from
    run_cli("extract", root / "m.csv", "--cache", root / "c.h5", *LITE)
    out = run_cli("select", root / "c.h5", "--budget", "2", "--out", root / "n.csv", check=False)
    assert out.returncode == 2 and "no unlabelled rows" in out.stderr and not (root / "n.csv").exists()


def test_k_center_picks_the_farthest_rows():
    U = unit(np.array([[1, 0], [0.99, 0.1], [0, 1], [-1, 0], [0.7, 0.7]], dtype=np.float32))
    picks = k_center(U, centres=np.array([0]), candidates=np.array([1, 2, 3, 4]), budget=2,
                     rng=np.random.default_rng(0))
    assert picks.tolist() == [3, 2]  # opposite the centre first, then the farthest from both


def test_every_strategy_picks_distinct_pool_rows():
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    X = rng.normal(size=(3, 16))[y] + rng.normal(size=(60, 16))
    labelled, pool = np.arange(6), np.arange(6, 60)
    for strategy in STRATEGIES:
        picks = choose(strategy, X, labelled, y[labelled], pool, 10, seed=1)
        assert len(set(picks.tolist())) == 10 and set(picks.tolist()) <= set(pool.tolist()), strategy


def test_simulate_runs_every_strategy_against_random(tmp_path):
    make_folder(str(tmp_path / "img" / "train"), per_class=10)
    make_folder(str(tmp_path / "img" / "val"), per_class=4, start=50)
    run_cli("extract", tmp_path / "img", "--cache", tmp_path / "c.h5", *LITE)
    out = json.loads(run_cli("select", tmp_path / "c.h5", "--simulate", "--budget", "3", "--rounds", "2",
                             "--seeds", "2", "--plot", tmp_path / "curves.png", "--json").stdout)
    assert set(out["summary"]) == set(STRATEGIES) and out["pool"] == 30 and out["test"] == 12
    for curve in out["summary"].values():
        assert curve["labels"] == [6, 9, 12] and len(curve["mean"]) == 3
        assert all(lo <= m <= hi for m, (lo, hi) in zip(curve["mean"], curve["ci95"]))
    assert (tmp_path / "curves.png").stat().st_size > 10_000
