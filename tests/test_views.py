"""extract --views K: augmented views of train images as extra rows, used honestly by stage two."""
import json
import os
import signal
import time

import numpy as np
import pytest
from PIL import Image

from cnncodes.cache import open_cache
from cnncodes.cache.verify import verify_cache
from cnncodes.classify import fit_and_evaluate, read_codes, plan_splits
from conftest import FAST_VGG, assert_same_cache, committed_rows, make_folder, make_image, run_cli, start_cli
from cnncodes.extract import ExtractConfig, run_extract
from cnncodes.extract.preprocessing import Preprocess
from cnncodes.extract.views import ViewPlan, ViewRecipe

KEY = "ab" * 32


def extract(folder, cache, views=2, **overrides):
    settings = dict(weights="random", crop_size=32, workers=0, batch_size=4, progress=False, dtype="float32",
                    views=views)
    return run_extract(ExtractConfig(str(folder), str(cache), **{**settings, **overrides}))


@pytest.fixture
def split_folder(tmp_path):
    root = tmp_path / "images"
    make_folder(str(root), per_class=5, split="train")
    make_folder(str(root), per_class=2, split="val", start=100)
    return root


def test_views_are_seeded_by_content_and_view_index():
    recipe = ViewRecipe(4)
    plan = ViewPlan(recipe, Preprocess(resize=37, crop=32))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    first, again = plan.views(image, KEY, 4), plan.views(image, KEY, 4)
    assert all(a.shape == (3, 32, 32) and np.array_equal(a, b) for a, b in zip(first, again))
    assert len({a.numpy().tobytes() for a in first}) == 4           # four different views
    other = plan.views(image, "cd" * 32, 4)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))  # another image, other crops
    assert len({recipe.view_seed(KEY, v) for v in range(1, 9)}) == 8
    assert ViewRecipe.from_dict(recipe.to_dict()) == recipe


def test_train_images_get_views_as_rows_after_their_centre_row(split_folder, tmp_path):
    cache = tmp_path / "c.h5"
    summary = extract(split_folder, cache, views=2)
    assert summary.written == 21  # images, not rows
    with open_cache(cache) as c:
        views, splits, paths = c.views, c.splits, c.paths
        assert len(c) == 15 * 3 + 6 and c.fingerprint.views["count"] == 2
        summary = c.summary()
    assert summary["images"] == 21 and summary["view_rows"] == 30 and summary["splits"] == {"train": 15, "val": 6}
    assert set(splits[views > 0].tolist()) == {"train"} and (views[splits == "val"] == 0).all()
    for row in np.flatnonzero(views > 0):
        assert paths[row] == paths[row - 1] and views[row] == views[row - 1] + 1
    assert verify_cache(str(cache)).ok
    assert "30 view rows: 2 augmented views per train image" in run_cli("info", cache).stdout
    import pyarrow.parquet as pq
    run_cli("export", cache, "--out", tmp_path / "c.parquet")
    table = pq.read_table(tmp_path / "c.parquet")
    assert table.column("view").to_pylist() == views.tolist() and table.column("path").to_pylist() == paths
    again = tmp_path / "again.h5"
    extract(split_folder, again, views=2)
    assert_same_cache(cache, again)   # the same rows and codes, bit for bit
    kept = run_cli("extract", split_folder, "--cache", cache, *FAST_VGG, "--dtype", "float32")  # the cache's K
    assert "wrote 0" in kept.stdout
    wrong = run_cli("extract", split_folder, "--cache", cache, *FAST_VGG, "--dtype", "float32", "--views", "1",
                    check=False)
    assert wrong.returncode != 0 and "views" in wrong.stderr and "Traceback" not in wrong.stderr


def test_changed_touched_and_pruned_images_move_with_their_views(split_folder, tmp_path):
    cache = tmp_path / "c.h5"
    extract(split_folder, cache, views=2)
    touched = split_folder / "train" / "green" / "0002.jpg"
    st = os.stat(touched)
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))   # same bytes, new mtime
    make_image(str(split_folder / "train" / "red" / "0001.jpg"), seed=999, tint=(90, 0, 0))  # new bytes
    os.remove(split_folder / "train" / "blue" / "0000.jpg")
    summary = extract(split_folder, cache, views=2, prune=True)
    assert (summary.written, summary.unchanged, summary.pruned) == (1, 1, 1)
    with open_cache(cache) as c:
        counts = {p: int((np.array(c.paths) == p).sum()) for p in set(c.paths)}
        assert len(c) == 14 * 3 + 6 and "train/blue/0000.jpg" not in counts
    assert counts["train/green/0002.jpg"] == counts["train/red/0001.jpg"] == 3
    assert verify_cache(str(cache)).ok


def test_a_killed_run_with_views_resumes_bit_identical(tmp_path):
    data = tmp_path / "images"
    make_folder(str(data), per_class=10, split="train")
    make_folder(str(data), per_class=2, split="val", start=100)
    args = [*FAST_VGG, "--dtype", "float32", "--views", "3", "--shard-rows", "4"]
    killed = tmp_path / "killed.h5"
    proc = start_cli("extract", data, "--cache", killed, *args)
    deadline = time.time() + 120
    while proc.poll() is None and committed_rows(killed) < 8 and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert 0 < committed_rows(killed)
    run_cli("extract", data, "--cache", killed, *args)
    run_cli("extract", data, "--cache", tmp_path / "clean.h5", *args)
    assert_same_cache(tmp_path / "clean.h5", killed)
    assert verify_cache(str(killed)).ok


def test_no_image_has_rows_on_both_sides_of_the_selection_split():
    rng = np.random.default_rng(0)
    images = 300
    splits_of_image = rng.choice(["train", "val"], size=images, p=[0.8, 0.2])
    labels_of_image = rng.integers(0, 3, images)
    views, image, splits, labels = [], [], [], []
    for i in range(images):
        k = 4 if splits_of_image[i] == "train" else 0
        views += range(k + 1)
        image += [i] * (k + 1)
        splits += [splits_of_image[i]] * (k + 1)
        labels += [labels_of_image[i]] * (k + 1)
    views, image, labels = np.array(views), np.array(image), np.array(labels)
    plan = plan_splits(splits, labels, seed=0, views=views)
    plain = plan_splits(splits_of_image, labels_of_image, seed=0)
    fit_image, fold = image[plan.fit_mask], plan.selection_fold
    assert not set(fit_image[fold == 0]) & set(fit_image[fold == -1])
    assert (views[plan.fit_mask][fold == 0] == 0).all() and (views[plan.eval_mask] == 0).all()
    # The reported and the choosing rows are the same photos as without views: one row per photo.
    assert plan.eval_mask.sum() == plain.eval_mask.sum() and (fold == 0).sum() == (plain.selection_fold == 0).sum()
    assert set(fit_image[fold == -2]) <= set(fit_image[fold == 0])
    # With a test split, val chooses and the views of train images all train.
    splits_t = np.where(np.isin(image, np.flatnonzero(splits_of_image == "val")[:20]), "test", splits)
    plan = plan_splits(splits_t, labels, views=views)
    assert plan.selection == "val" and (views[plan.eval_mask] == 0).all()


def test_fit_trains_on_views_and_reports_centre_views(split_folder, tmp_path):
    with_views, without = tmp_path / "v.h5", tmp_path / "n.h5"
    extract(split_folder, with_views, views=2)
    extract(split_folder, without, views=0)
    a, _ = fit_and_evaluate(read_codes(str(with_views)), "centroid")
    b, _ = fit_and_evaluate(read_codes(str(without)), "centroid")
    assert a["n_eval"] == b["n_eval"] == 6 and a["n_fit"] == 45 and b["n_fit"] == 15
    small = json.loads(run_cli("fit", with_views, "--classifier", "logreg", "--max-memory", "500K", "--json").stdout)
    assert small["n_eval"] == 6 and small["memory"].startswith("every row, streamed")


def test_predict_tta_averages_the_mirror_image(split_folder, tmp_path):
    cache, model = tmp_path / "c.h5", tmp_path / "m.cnnmodel"
    extract(split_folder, cache, views=2)
    run_cli("fit", cache, "--classifier", "logreg", "--model", model)
    plain = json.loads(run_cli("predict", model, split_folder / "val", "--json").stdout)["predictions"]
    tta = json.loads(run_cli("predict", model, split_folder / "val", "--json", "--tta").stdout)["predictions"]
    assert [p["path"] for p in plain] == [p["path"] for p in tta] and len(tta) == 6
    assert all(abs(sum(t["probability"] for t in p["top_k"]) - 1) < 1e-4 for p in tta)
    assert any(abs(p["probability"] - q["probability"]) > 1e-6 for p, q in zip(plain, tta))


def test_verify_recompute_recomputes_augmented_views_too(split_folder, tmp_path, monkeypatch):
    """View rows are seeded, so `verify --recompute` re-extracts them like centre rows, and a
    changed crop sampler (here: other seeds) shows as a lower cosine (random weights on tinted
    toy images keep every code close, hence the tight bar)."""
    from cnncodes.extract.by_fingerprint import recompute_rows
    cache = tmp_path / "v.h5"
    extract(split_folder, cache, views=2)
    with open_cache(str(cache)) as c:
        rows, view_rows = len(c), int((c.views > 0).sum())
    assert view_rows == 15 * 2
    worst, compared, failures = recompute_rows(str(cache), rows)
    assert (compared, failures) == (rows, []) and worst > 0.9999
    out = run_cli("verify", cache, "--recompute", str(rows))
    assert f"recomputed {rows} rows" in out.stdout and out.stdout.strip().endswith("ok")
    monkeypatch.setattr(ViewRecipe, "view_seed", lambda self, key, view: 12345 + view)
    worst, compared, _ = recompute_rows(str(cache), rows)
    assert compared == rows and worst < 0.999
