"""The notebook route (issue 46): the Python API as README.md and docs/python.md write it, on one
cache. One row per photo whichever writer came first; unlabeled rows never in X and y; every
parameter does something or is refused by name; the inputs a notebook holds; one default layer;
short reprs."""
import csv
import os
import shutil

import numpy as np
import pytest

import cnncodes
from conftest import make_image

LITE = dict(backbone="efficientnet_lite0", crop_size=64)
RUN = dict(LITE, workers=0, batch_size=4)
CLASSES = ("red", "green", "blue")


def _flat_folder(root, per_class=6, unlabeled=1):
    """Photos in one flat folder with labels.csv (path, label); the last ``unlabeled`` of each class
    have an empty label."""
    os.makedirs(root)
    rows = []
    for c, name in enumerate(CLASSES):
        tint = [0, 0, 0]
        tint[c] = 120
        for i in range(per_class):
            file = f"{name}_{i}.png"
            make_image(os.path.join(root, file), seed=100 * c + i, tint=tuple(tint))
            rows.append((file, "" if i >= per_class - unlabeled else name))
    with open(os.path.join(root, "labels.csv"), "w", newline="") as f:
        csv.writer(f).writerows([("path", "label")] + rows)
    return rows


def _rows(cache):
    from cnncodes.cache import open_cache
    with open_cache(cache) as c:
        return {p: (k, None if l < 0 else c.class_names[l]) for p, k, l in zip(c.paths, c.keys, c.labels)}


@pytest.fixture
def photos(tmp_path):
    rows = _flat_folder(str(tmp_path / "photos"))
    return tmp_path, rows


def test_the_readme_sequence_keeps_one_row_per_photo_and_its_labels(photos):
    """extract_codes over a manifest, then CodesTransformer over the same photos by their paths on
    disk: no row added, no label changed, and the transformer's codes are the cached ones."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    root, rows = photos
    cache = str(root / "codes.h5")
    cnncodes.extract_codes(str(root / "photos" / "labels.csv"), cache, **RUN)
    before = _rows(cache)
    audited = cnncodes.audit(cache).counts
    codes = cnncodes.load_codes(cache)
    paths = [str(root / "photos" / p) for p, _ in rows]
    transformer = cnncodes.CodesTransformer(cache=cache, **LITE, batch_size=4)
    X = transformer.fit_transform(paths)
    assert _rows(cache) == before  # the same rows, keys and labels
    assert not hasattr(transformer, "last_summary_")  # nothing was extracted
    at = {p: i for i, p in enumerate(codes.paths)}
    labelled = [i for i, (p, label) in enumerate(rows) if label]
    assert np.array_equal(X[labelled], codes.X[[at[rows[i][0]] for i in labelled]])
    pipe = make_pipeline(cnncodes.CodesTransformer(cache=cache, **LITE), LogisticRegression(max_iter=200))
    labelled_paths = [paths[i] for i in labelled]
    cross_val_score(pipe, labelled_paths, [rows[i][1] for i in labelled], cv=2)
    assert _rows(cache) == before
    assert cnncodes.audit(cache).counts == audited


def test_a_transformer_first_then_extract_moves_its_rows_rather_than_doubling_them(photos):
    """The other order: the transformer caches the photos under their absolute paths; the labelled
    manifest's extract then finds them by content and moves them to its paths with its labels,
    codes bit-identical, nothing encoded, and the cache verifies."""
    root, rows = photos
    cache = str(root / "codes.h5")
    paths = [str(root / "photos" / p) for p, _ in rows]
    X = cnncodes.CodesTransformer(cache=cache, **LITE, batch_size=4).fit_transform(paths)
    summary = cnncodes.extract_codes(str(root / "photos" / "labels.csv"), cache, **RUN)
    assert (summary.written, summary.moved) == (0, len(rows)), summary.line()
    held = _rows(cache)
    assert sorted(held) == sorted(p for p, _ in rows)
    assert {p: label for p, (_, label) in held.items()} == {p: (label or None) for p, label in rows}
    everything = cnncodes.load_codes(cache)
    both = np.concatenate([everything.X, everything.unlabeled.X])
    names = everything.paths + everything.unlabeled.paths
    assert np.array_equal(both[[names.index(p) for p, _ in rows]], X)
    assert cnncodes.verify(cache).ok


def test_a_renamed_photo_keeps_its_row_and_a_kill_before_the_link_leaves_no_double(photos, monkeypatch):
    """Renamed files are found by content: their rows move (codes kept). The move travels in the
    shard itself, so a run killed after writing the shard and before linking it is linked by the
    next writer with the old row cut: never both."""
    from cnncodes.cache import append
    root, rows = photos
    folder = root / "photos"
    cache = str(root / "codes.h5")
    cnncodes.extract_codes(str(folder / "labels.csv"), cache, **RUN)
    before = _rows(cache)
    old, new = rows[0][0], "renamed_" + rows[0][0]
    os.rename(folder / old, folder / new)
    with open(folder / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label")] + [(new if p == old else p, label) for p, label in rows])

    def killed(self, name):
        raise KeyboardInterrupt("killed between the shard's rename and its link")
    monkeypatch.setattr(append.AppendSession, "_link", killed)
    with pytest.raises(KeyboardInterrupt):
        cnncodes.extract_codes(str(folder / "labels.csv"), cache, **RUN)
    monkeypatch.undo()
    assert _rows(cache) == before  # the published cache did not change
    assert append.recover(cache) == 1
    after = _rows(cache)
    assert old not in after and after[new] == before[old] and len(after) == len(before)
    summary = cnncodes.extract_codes(str(folder / "labels.csv"), cache, **RUN)
    assert (summary.written, summary.moved, summary.vanished) == (0, 0, 0), summary.line()


def test_a_manifest_without_a_label_column_keeps_the_labels_cached(photos):
    root, rows = photos
    cache = str(root / "codes.h5")
    cnncodes.extract_codes(str(root / "photos" / "labels.csv"), cache, **RUN)
    before = _rows(cache)
    (root / "photos" / rows[0][0]).write_bytes((root / "photos" / rows[1][0]).read_bytes())  # changed bytes
    with open(root / "photos" / "paths.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path",)] + [(p,) for p, _ in rows])
    summary = cnncodes.extract_codes(str(root / "photos" / "paths.csv"), cache, **RUN)
    assert summary.written == 1
    after = _rows(cache)
    assert {p: label for p, (_, label) in after.items()} == {p: label for p, (_, label) in before.items()}


def test_load_codes_gives_labelled_rows_and_sets_the_unlabeled_apart(photos):
    """X, y, splits and paths cover labelled rows only (y is class indices, nothing else); the rest
    are ``codes.unlabeled`` (y -1); the same holds when the codes exceed max_memory and stream."""
    from sklearn.linear_model import LogisticRegression
    root, rows = photos
    cache = str(root / "codes.h5")
    cnncodes.extract_codes(str(root / "photos" / "labels.csv"), cache, **RUN)
    codes = cnncodes.load_codes(cache)
    n_unlabeled = sum(1 for _, label in rows if not label)
    assert len(codes) == len(codes.X) == len(codes.y) == len(codes.paths) == len(rows) - n_unlabeled
    assert set(codes.y.tolist()) == set(range(len(CLASSES)))
    assert set(LogisticRegression(max_iter=200).fit(codes.X, codes.y).classes_) == set(range(len(CLASSES)))
    assert sorted(codes.paths) == sorted(p for p, label in rows if label)
    assert sorted(codes.unlabeled.paths) == sorted(p for p, label in rows if not label)
    assert (codes.unlabeled.y == -1).all() and codes.unlabeled.X.shape == (n_unlabeled, codes.X.shape[1])
    assert "unlabeled" in codes.notes[-1] and "unlabeled" in repr(codes) and len(repr(codes)) < 200
    model = cnncodes.fit(codes, "logreg")
    assert model.result.unlabeled_left_out == n_unlabeled
    streamed = cnncodes.load_codes(cache, max_memory=2000)  # a few rows fit: the codes stream
    assert streamed.streamed and len(streamed) == len(codes) and (streamed.y == codes.y).all()
    assert streamed.paths == codes.paths
    held = cnncodes.fit(codes, "logreg", C=1.0).result
    from_stream = cnncodes.fit(streamed, "logreg", C=1.0).result
    assert from_stream.n_eval == held.n_eval and from_stream.n_fit == held.n_fit
    assert streamed.in_memory().paths == [streamed.paths[i] for i in
                                          np.searchsorted(streamed.rows, streamed.in_memory().rows)]


def test_fit_and_compare_fix_the_hyper_parameters_given_and_refuse_unknown_names(photos):
    root, rows = photos
    cache = str(root / "codes.h5")
    cnncodes.extract_codes(str(root / "photos" / "labels.csv"), cache, **RUN)
    codes = cnncodes.load_codes(cache)
    for given in (codes, cache):
        result = cnncodes.fit(given, "logreg", C=1.0).result
        assert result.params == {"C": 1.0} and result.fixed == {"C": 1.0}
        assert "fixed by the caller: C=1.0" in result.selection and result.to_dict()["fixed"] == {"C": 1.0}
    swept = cnncodes.fit(codes, "logreg").result
    assert "fixed" not in swept.to_dict() and len(swept.sweep) > 1
    knn = cnncodes.fit(codes, "knn", n_neighbors=1).result
    assert knn.params["n_neighbors"] == 1 and "fixed by the caller" in knn.selection
    assert cnncodes.fit(codes, "mlp", hidden=8, epochs=2).result.fixed == {"hidden": 8, "epochs": 2}
    with pytest.raises(TypeError, match="no hyper-parameter or load option 'banana'"):
        cnncodes.fit(codes, "logreg", banana=3)
    with pytest.raises(TypeError, match="did you mean 'C'"):
        cnncodes.fit(cache, "logreg", c=1.0)
    with pytest.raises(TypeError, match="did you mean 'max_memory'"):
        cnncodes.fit(cache, "logreg", max_memroy="1G")
    with pytest.raises(TypeError, match="layer= applies when codes is a cache path"):
        cnncodes.fit(codes, "logreg", layer="avgpool")
    table = cnncodes.compare(codes, "logreg,knn", params={"knn": {"n_neighbors": 1}})
    assert table[1].params["n_neighbors"] == 1 and table[0].fixed is None
    with pytest.raises(TypeError, match="did you mean 'n_neighbors'"):
        cnncodes.compare(codes, "knn", params={"knn": {"n_neighbour": 1}})
    with pytest.raises(TypeError, match="params="):
        cnncodes.compare(cache, "logreg", C=1.0)
    with pytest.raises(TypeError, match="did you mean 'workers'"):
        cnncodes.extract_codes(str(root / "photos"), cache, **LITE, worker=0)


def test_the_inputs_a_notebook_holds(photos, monkeypatch):
    """A DataFrame, lists of paths and labels, PIL images and arrays, one path alone."""
    pd = pytest.importorskip("pandas")
    from PIL import Image
    root, rows = photos
    cache = str(root / "codes.h5")
    monkeypatch.chdir(root)
    frame = pd.DataFrame({"path": [os.path.join("photos", p) for p, _ in rows],
                          "label": [label or None for _, label in rows]})
    summary = cnncodes.extract_codes(frame, cache, **RUN)
    assert summary.written == len(rows)
    codes = cnncodes.load_codes(cache)
    assert sorted(codes.paths) == sorted(str(root / "photos" / p) for p, label in rows if label)
    again = cnncodes.extract_codes([str(root / "photos" / p) for p, _ in rows], cache,
                                   labels=[label for _, label in rows], **RUN)
    assert (again.written, again.skipped, again.moved) == (0, len(rows), 0), again.line()
    with pytest.raises(ValueError, match="2 labels for"):
        cnncodes.extract_codes([p for p, _ in rows], cache, labels=["red", "blue"], **RUN)
    with pytest.raises(TypeError, match="needs a 'path' column"):
        cnncodes.extract_codes(frame.rename(columns={"path": "file"}), cache, **RUN)
    model = cnncodes.fit(codes, "logreg")
    assert model.columns == list(CLASSES) or sorted(model.columns) == sorted(CLASSES)
    image = Image.open(root / "photos" / rows[0][0]).convert("RGB")
    predictions, failures = model.predict_images(image)
    assert not failures and predictions[0]["path"] == "image 0 (a PIL image)"
    from_array, _ = model.predict_images([np.asarray(image), str(root / "photos" / rows[1][0])])
    assert from_array[0]["path"] == "image 0 (a numpy array)" and from_array[0]["label"] == predictions[0]["label"]
    assert from_array[1]["path"] == str(root / "photos" / rows[1][0])
    (answer,) = cnncodes.similar(cache, str(root / "photos" / rows[0][0]), k=2)
    assert answer["source"] == "cache" and all(n["path"] != answer["query"] for n in answer["neighbours"])
    encoder = cnncodes.Encoder(**LITE)
    assert encoder.encode(np.asarray(image)).shape == (codes.X.shape[1],)


def test_one_default_layer_for_the_encoder_the_transformer_and_extract(photos):
    root, rows = photos
    cache = str(root / "codes.h5")
    cnncodes.extract_codes(str(root / "photos" / "labels.csv"), cache, **RUN)
    codes = cnncodes.load_codes(cache)
    model = cnncodes.fit(codes, "logreg")
    paths = [str(root / "photos" / p) for p, label in rows if label][:3]
    encoder = cnncodes.Encoder(**LITE, batch_size=4)
    assert encoder.width == codes.X.shape[1] == 1472 and "+".join(encoder.layers) == model.layer
    assert cnncodes.Encoder(**LITE, layer=model.layer).layers == encoder.layers
    transformed = cnncodes.CodesTransformer(cache=cache, **LITE).fit_transform(paths)
    assert transformed.shape == (3, 1472)
    assert np.abs(encoder.encode(paths) - transformed).max() < 0.05  # the cache rounds to float16
    assert model.predict(transformed) == model.predict(codes.X[[codes.paths.index(os.path.basename(p))
                                                               for p in paths]])
    with pytest.raises(Exception, match="refusing to append codes from a different extractor"):
        cnncodes.CodesTransformer(cache=cache, **LITE, layer="avgpool").transform(paths)


def test_reprs_are_short_and_tables_render_as_html(photos):
    root, rows = photos
    cache = str(root / "codes.h5")
    summary = cnncodes.extract_codes(str(root / "photos" / "labels.csv"), cache, **RUN)
    assert repr(summary).startswith("ExtractSummary(") and len(repr(summary)) < 300
    codes = cnncodes.load_codes(cache)
    table = cnncodes.compare(codes, "centroid,logreg")
    assert len(repr(table)) < 1000 and "<table>" in table._repr_html_() and "logreg" in table._repr_html_()
    result = table[0]
    assert len(repr(result)) < 250 and "accuracy" in repr(result)
    found = cnncodes.audit(cache)
    assert len(repr(found)) < 400 and "<table>" in found._repr_html_() and isinstance(found.counts, dict)


def test_a_refused_first_extract_leaves_nothing_behind(tmp_path):
    cache = tmp_path / "new.h5"
    (tmp_path / "photos").mkdir()
    make_image(str(tmp_path / "photos" / "a.png"), seed=1)
    with pytest.raises(Exception):
        cnncodes.extract_codes(str(tmp_path / "photos"), str(cache), backbone="efficientnet_lite0",
                               weights=str(tmp_path / "no-such-weights.pt"), workers=0)
    assert sorted(os.listdir(tmp_path)) == ["photos"]


def test_rank_backbones_writes_nothing_where_it_was_not_told(tmp_path, monkeypatch):
    from conftest import make_folder
    make_folder(str(tmp_path / "images"), per_class=6)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    ranking = cnncodes.rank_backbones(str(tmp_path / "images"), "efficientnet_lite0", sample=12, crop_size=64,
                                      workers=0)
    assert os.listdir(work) == [] and os.path.isdir(ranking.caches)
    assert "<table>" in ranking._repr_html_() and "efficientnet_lite0" in repr(ranking)
    shutil.rmtree(ranking.caches)


def test_the_notebook_in_docs_runs_end_to_end_in_a_jupyter_kernel(tmp_path):
    """docs/notebook.ipynb, executed by nbclient in a real IPython kernel (its parameters cell set
    to small inputs, as papermill would): no cell fails, nothing warns, and what a cell shows is
    short: the comparison and the audit as HTML tables, the codes in one line."""
    nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the test extra (nbformat)")
    nbclient = pytest.importorskip("nbclient", reason="the notebook test needs the test extra (nbclient)")
    from conftest import ROOT
    notebook = nbformat.read(os.path.join(ROOT, "docs", "notebook.ipynb"), as_version=4)
    (parameters,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    parameters.source = f"crop_size = 64\nOUT = {str(tmp_path)!r}"
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    warned = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr" and "Warning" in o.text]
    assert not warned, warned
    shown = {c.source.splitlines()[-1].split()[0]: c.outputs for c in notebook.cells if c.cell_type == "code"}
    html = [o for o in shown["table"] if o.output_type == "execute_result"][0].data
    assert "<table>" in html["text/html"] and "logreg" in html["text/html"]
    assert "<table>" in [o for o in shown["found"] if o.output_type == "execute_result"][0].data["text/html"]
    codes_repr = [o for o in shown["codes"] if o.output_type == "execute_result"][0].data["text/plain"]
    assert codes_repr.startswith("CodesData(") and len(codes_repr) < 200
    assert all(len(o.get("data", {}).get("text/plain", "")) < 2000 for o in outputs)
    assert os.path.isfile(tmp_path / "codes.h5") and os.path.isfile(tmp_path / "frame.h5")


def test_a_deleted_cache_file_does_not_come_back_from_its_folder(photos):
    """A user deleting codes.h5 to start over, its folder left behind: extract refuses in one line
    (naming both) rather than bring the deleted rows back; with the folder gone too it starts anew."""
    from cnncodes.cache.errors import CacheError
    root, rows = photos
    cache = str(root / "codes.h5")
    cnncodes.extract_codes(str(root / "photos" / "labels.csv"), cache, **RUN)
    os.remove(cache)
    with pytest.raises(CacheError, match="is gone but .*codes.h5.shards/ still holds its rows") as refused:
        cnncodes.extract_codes(str(root / "photos" / "labels.csv"), cache, **dict(RUN, crop_size=32))
    assert "\n" not in str(refused.value)
    shutil.rmtree(cache + ".shards")
    summary = cnncodes.extract_codes(str(root / "photos" / "labels.csv"), cache, **dict(RUN, crop_size=32))
    assert summary.written == len(rows)


def test_a_copy_of_a_photo_that_is_still_there_is_a_photo_of_its_own(photos, tmp_path):
    """Only a row whose file is gone (or is the very file) moves: a byte-identical copy elsewhere,
    listed by another source, gets its own row, and the original keeps its row, label and split."""
    root, rows = photos
    cache = str(root / "codes.h5")
    cnncodes.extract_codes(str(root / "photos" / "labels.csv"), cache, **RUN)
    before = _rows(cache)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(root / "photos" / rows[0][0], elsewhere / "dup.png")
    summary = cnncodes.extract_codes([str(elsewhere / "dup.png")], cache, labels=["blue"], **RUN)
    assert (summary.written, summary.moved) == (1, 0), summary.line()
    after = _rows(cache)
    assert {p: after[p] for p in before} == before
    assert after[str(elsewhere / "dup.png")] == (before[rows[0][0]][0], "blue")
