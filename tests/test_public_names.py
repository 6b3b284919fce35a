"""Every public name of `cnncodes`, called once on the demo photos: its result is the verb's type,
that type's ``to_dict()`` is what the command line's ``--json`` prints for the same call, and its
repr is one short line (what a notebook cell shows)."""
import csv
import json
import os
import shutil

import numpy as np
import pytest

import cnncodes
from conftest import ROOT, run_cli

DEMO = os.path.join(ROOT, "cnncodes", "demo_data", "flowers")
FAST = dict(backbone="efficientnet_lite0", crop_size=64, workers=0, batch_size=16)
FAST_FLAGS = ["--backbone", "efficientnet_lite0", "--crop-size", "64", "--workers", "0", "--batch-size", "16",
              "--no-progress"]
TIMINGS = {"fit_seconds", "seconds", "extract_seconds", "score_seconds", "images_per_second"}


def _json(*args):
    return json.loads(run_cli(*args).stdout)


def _without_timings(value):
    """A result's JSON less the wall-clock figures (two runs never take the same time)."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _same_json(result, cli_json):
    ours = json.loads(json.dumps(result.to_dict(), default=str))
    assert _without_timings(ours) == _without_timings(cli_json)


def _short(value, at_most=300):
    text = repr(value)
    if hasattr(value, "get_params"):  # a scikit-learn estimator: its own repr, wrapped at 79 columns
        text = " ".join(text.split())
    assert "\n" not in text and len(text) <= at_most, text
    return text


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo photos copied (select writes beside them), listed in a manifest that leaves 20 of
    the train photos unlabelled; their Lite0 codes at 64 pixels."""
    root = tmp_path_factory.mktemp("public")
    photos = root / "photos"
    shutil.copytree(DEMO, photos)
    rows = []
    for split in ("train", "val"):
        for label in sorted(os.listdir(photos / split)):
            for name in sorted(os.listdir(photos / split / label)):
                rows.append([f"{split}/{label}/{name}", label, split])
    for row in [r for r in rows if r[2] == "train"][::5][:20]:
        row[1] = ""
    with open(photos / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "split"], *rows])
    cache = str(root / "codes.h5")
    summary = cnncodes.extract_codes(str(photos / "labels.csv"), cache, **FAST)
    return root, photos, cache, summary


def test_every_public_name_gives_its_type_its_json_and_a_short_repr(demo, tmp_path):
    root, photos, cache, summary = demo
    checked = set()

    def check(name, result, kind):
        assert type(result).__name__ == kind, (name, type(result))
        _short(result)
        checked.add(name)
        return result

    check("extract_codes", summary, "ExtractSummary")
    assert summary.written == 200
    again = cnncodes.extract_codes(str(photos / "labels.csv"), cache, **FAST)
    _same_json(again, _json("extract", photos / "labels.csv", "--cache", cache, *FAST_FLAGS, "--json"))
    assert again.skipped == 200 and again.written == 0

    found = check("list_backbones", cnncodes.list_backbones("efficientnet_lite*"), "Backbones")
    _same_json(found, _json("backbones", "efficientnet_lite*", "--json"))
    assert "efficientnet_lite0" in found and found[0] == found.names[0]

    codes = check("load_codes", cnncodes.load_codes(cache), "CodesData")
    assert len(codes.y) == 180 and (codes.y >= 0).all() and len(codes.unlabeled.y) == 20

    model = check("fit", cnncodes.fit(cache, "logreg"), "Model")
    model_path = model.save(tmp_path / "m.npz")
    _same_json(model, _json("fit", cache, "--classifier", "logreg", "--model", model_path, "--json"))
    check("FitResult", model.result, "FitResult")
    check("Model", model, "Model")
    loaded = check("load_model", cnncodes.load_model(model_path), "Model")
    assert loaded.predict(codes.X[:5]) == model.predict(codes.X[:5])

    images = [str(photos / "val" / "daisy"), str(photos / "val" / "roses")]
    answer = check("predict", cnncodes.predict(model_path, images), "Predictions")
    theirs = _json("predict", model_path, *images, "--json")
    assert [(p["path"], p["label"]) for p in answer.predictions] == [(p["path"], p["label"])
                                                                     for p in theirs["predictions"]]
    np.testing.assert_allclose([p["probability"] for p in answer.predictions],
                               [p["probability"] for p in theirs["predictions"]], rtol=1e-5)
    predictions, failures = answer  # still the pair it always was
    assert len(predictions) == 20 and failures == [] and theirs["failures"] == []

    table = check("compare", cnncodes.compare(cache, "centroid,logreg"), "Comparison")
    check("Comparison", table, "Comparison")
    _same_json(table, _json("compare", cache, "--classifiers", "centroid,logreg", "--json"))
    assert [r.classifier for r in table] == ["centroid", "logreg"]

    audited = check("audit", cnncodes.audit(cache), "AuditReport")
    _same_json(audited, _json("audit", cache, "--json"))

    verified = check("verify", cnncodes.verify(cache), "VerifyReport")
    _same_json(verified, _json("verify", cache, "--json"))
    assert verified.ok

    with cnncodes.open_cache(cache) as c:
        check("open_cache", c, "CodesCache")
        assert json.loads(json.dumps(c.summary())) == _json("info", cache, "--json")

    query = codes.paths[0]
    near = check("similar", cnncodes.similar(cache, [query], k=3), "Neighbours")
    _same_json(near, _json("similar", cache, query, "-k", "3", "--json"))
    (first,) = near
    assert len(first["neighbours"]) == 3 and query not in [n["path"] for n in first["neighbours"]]

    try:
        import faiss  # noqa: F401
    except ImportError:  # the extra [index] not installed: index names it in one line
        from cnncodes.classify.errors import ClassifyError
        with pytest.raises(ClassifyError, match=r"pip install 'cnncodes\[index\]'"):
            cnncodes.index(cache)
        checked.add("index")
    else:
        built = check("index", cnncodes.index(cache), "IndexSummary")
        assert built.rebuilt and built.indexed == 200
        _same_json(cnncodes.index(cache), _json("index", cache, "--json"))  # both: already up to date
        assert cnncodes.similar(cache, [query], k=3).search == built.kind

    picked = check("select", cnncodes.select(cache, 5, str(photos / "next.csv")), "Selection")
    _same_json(picked, _json("select", cache, "--budget", "5", "--out", photos / "next.csv", "--json"))
    assert len(picked.paths) == 5 and picked.pool == 20

    trial = check("simulate_selection", cnncodes.simulate_selection(cache, budget=3, rounds=1, seeds=1),
                  "SelectionSimulation")
    _same_json(trial, _json("select", cache, "--simulate", "--budget", "3", "--rounds", "1", "--seeds", "1",
                            "--json"))

    ranking = check("rank_backbones", cnncodes.rank_backbones(
        str(photos / "train"), "efficientnet_lite0", sample=40, caches=str(root / "rank"), crop_size=64,
        workers=0), "Ranking")
    _same_json(ranking, _json("rank", photos / "train", "--backbones", "efficientnet_lite0", "--sample", "40",
                              "--caches", root / "rank", "--crop-size", "64", "--workers", "0", "--json"))

    encoder = check("Encoder", cnncodes.Encoder("efficientnet_lite0", crop_size=64), "Encoder")
    row = encoder.encode(str(photos / codes.paths[0]))
    np.testing.assert_allclose(row, codes.X[0], atol=0.05 * np.abs(codes.X[0]).max())  # the cache keeps float16

    step = check("CodesTransformer", cnncodes.CodesTransformer(cache=cache, crop_size=64, **{
        k: v for k, v in FAST.items() if k != "crop_size"}), "CodesTransformer")
    X = step.fit_transform([str(photos / p) for p in codes.paths[:4]])
    np.testing.assert_array_equal(X, codes.X[:4])

    assert checked == set(cnncodes.__all__) - {"__version__"}, "a public name this walk does not call"
