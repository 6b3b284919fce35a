"""`cnncodes index`: a faiss index beside the cache, kept in step with it; the cosine engine searches
through it. Small synthetic caches (clustered codes with planted copies), every kind against the
exact search; a kill during a build; rows added, pruned and relabelled after indexing; and without
faiss, everything as before."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import cnncodes
from cnncodes.cache import Fingerprint, open_for_append
from cnncodes.classify import cosine
from cnncodes.classify import index as search
from conftest import ROOT, run_cli

faiss = pytest.importorskip("faiss", reason="faiss-cpu is the optional extra [index]")

WIDTH = 32
NAMES = ["a", "b", "c"]


def _codes(n, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (40, WIDTH)).astype(np.float32)
    X = centres[rng.integers(0, 40, n)] + rng.normal(0, 0.35, (n, WIDTH)).astype(np.float32)
    X[n // 2:n // 2 + 20] = X[:20] + rng.normal(0, 0.01, (20, WIDTH))  # planted copies: row i + n/2 ~ row i
    return np.abs(X)  # non-negative, as pooled activations are


def _add(cache, X, first=0, label=None):
    fingerprint = Fingerprint(backbone="synthetic", layers=("pool",), weights="random:0", preprocess={"crop": 224})
    with open_for_append(cache, fingerprint, {"pool": WIDTH}, NAMES, background=False) as session:
        for start in range(0, len(X), 512):
            rows = range(start, min(len(X), start + 512))
            session.add_rows([f"{NAMES[i % 3]}/{first + i:06d}.jpg" for i in rows],
                             [f"{first + i:064x}" for i in rows], ["train"] * len(rows),
                             [label or NAMES[i % 3] for i in rows], [(1, 1, first + i) for i in rows],
                             {"pool": X[start:start + 512]})
            session.commit_shard()


def _exact(cache, Q, k, exclude):
    return cosine.top_k(Q, cosine.cache_blocks(cache, "pool", 1 << 26), k, exclude)


def _codes_of(cache, rows):
    with cnncodes.open_cache(cache) as c:
        mask = np.zeros(len(c), dtype=bool)
        mask[rows] = True
        return c.codes("pool", rows=mask)[np.searchsorted(np.flatnonzero(mask), rows)]


@pytest.fixture
def cache(tmp_path):
    path = str(tmp_path / "c.h5")
    _add(path, _codes(3000))
    return path


def _recall(found, truth):
    return np.mean([len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(found, truth)])


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq"])
def test_every_kind_agrees_with_the_exact_search(cache, kind):
    built = cnncodes.index(cache, kind=kind)
    assert (built.kind, built.rows, built.indexed, built.added, built.rebuilt) == (kind, 3000, 3000, 3000, True)
    rows = np.arange(0, 3000, 37)
    Q = _codes_of(cache, rows)
    truth, truth_scores = _exact(cache, Q, 10, rows)
    found, scores, how = search.nearest_in_cache(cache, "pool", Q, 10, 1 << 26, rows)
    assert how == kind
    assert not (found == rows[:, None]).any()  # a row never answers itself
    assert _recall(found, truth) >= (1.0 if kind == "flat" else 0.9)
    # the scores are cosines, as the exact search gives them (the compressed kind ranks its candidates
    # by the stored float16 unit codes)
    np.testing.assert_allclose(scores[:, 0], truth_scores[:, 0], atol=2e-3)
    planted = np.flatnonzero(rows < 20)
    assert (found[planted, 0] == rows[planted] + 1500).all()
    # similar says which search it used; exact=True reads every row
    with cnncodes.open_cache(cache) as c:
        query = c.paths[5]
    near = cnncodes.similar(cache, [query], k=5)
    assert near.search == kind and near.to_dict()["search"] == kind
    assert cnncodes.similar(cache, [query], k=5, exact=True).search == "exact"
    checked = cnncodes.similar(cache, [query], k=10, check_recall=30)
    assert checked.recall["queries"] == 30 and checked.recall["recall_at_k"] >= (1.0 if kind == "flat" else 0.85)


def test_a_product_quantiser_is_given_rows_in_batches_whose_table_fits(cache, monkeypatch):
    """faiss's PQ encodes the rows of one add through a float32 table of [rows, 256, M]: 2.7 GB for
    32,768 rows of 1280 (the 5M build's peak). The build's batches keep it within ADD_TABLE_BYTES,
    and the index is the same as one built from larger batches."""
    rows = np.arange(0, 3000, 37)
    Q = _codes_of(cache, rows)
    cnncodes.index(cache, kind="ivfpq")
    whole = search.nearest_in_cache(cache, "pool", Q, 10, 1 << 26, rows)
    table_row = 4 * 256 * search._pq_bytes(WIDTH)  # bytes of table per row
    monkeypatch.setattr(search, "ADD_TABLE_BYTES", 300 * table_row)
    batches, add = [], faiss.IndexIVFPQ.add

    def spy(index, x, *args, **kwargs):
        batches.append(len(x))
        return add(index, x, *args, **kwargs)
    monkeypatch.setattr(faiss.IndexIVFPQ, "add", spy)
    cnncodes.index(cache, kind="ivfpq", rebuild=True)
    assert sum(batches) == 3000 and max(batches) == 300 and len(batches) >= 10
    batched = search.nearest_in_cache(cache, "pool", Q, 10, 1 << 26, rows)
    np.testing.assert_array_equal(batched[0], whole[0])
    np.testing.assert_array_equal(batched[1], whole[1])


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="posix_fadvise: Linux and other POSIX systems")
def test_the_candidates_pages_are_asked_for_at_once_before_they_are_read(cache, monkeypatch):
    """An IVF-PQ query reads its candidates from the float16 store at random places: their pages
    are asked of the kernel first (posix_fadvise WILLNEED, one call a run of adjacent rows, on the
    store's bytes of those rows), and the answers are those read without asking; a store removed
    under a loaded index (a rebuild's) is still read through its map, unasked."""
    rows = np.arange(0, 3000, 37)
    Q = _codes_of(cache, rows)
    cnncodes.index(cache, kind="ivfpq")
    asked, advise = [], os.posix_fadvise

    def spy(fd, offset, length, advice):
        asked.append((offset, length, advice))
        return advise(fd, offset, length, advice)
    monkeypatch.setattr(os, "posix_fadvise", spy)
    advised = search.nearest_in_cache(cache, "pool", Q, 10, 1 << 26, rows)
    store = search.open_index(cache, "pool").vectors[0]
    row_bytes = WIDTH * 2
    assert asked and all(advice == os.POSIX_FADV_WILLNEED and length and length % row_bytes == 0
                         for _, length, advice in asked)
    assert all((offset - store.offset) % row_bytes == 0 and offset + length <= store.offset + store.size * 2
               for offset, length, _ in asked)
    search._prefetch(store, np.array([5, 3, 4, 9, 4]))  # rows 3-5 in one call, 9 in another
    assert [(offset - store.offset) // row_bytes for offset, _, _ in asked[-2:]] == [3, 9]
    assert [length // row_bytes for _, length, _ in asked[-2:]] == [3, 1]
    loaded = search.open_index(cache, "pool")
    os.remove(loaded.vectors[0].filename)  # what a rebuild's commit does to the old store
    gone = loaded.search(Q, 10, exclude=rows)
    monkeypatch.delattr(os, "posix_fadvise")  # where the OS has none: read as they come
    plain = loaded.search(Q, 10, exclude=rows)
    for answers in (advised, gone):
        np.testing.assert_array_equal(answers[0], plain[0])
        np.testing.assert_array_equal(answers[1], plain[1])


@pytest.mark.parametrize("kind, rows, least", [("ivfpq", 200, 256), ("ivf", 10, 16)])
def test_too_few_rows_to_train_on_is_one_line_naming_the_kinds_that_need_none(tmp_path, kind, rows, least):
    """faiss stops its training with an assertion (a traceback) on fewer rows than its centroids: an
    explicit kind is refused before, in one line, and nothing is written."""
    from cnncodes.classify.errors import ClassifyError
    path = str(tmp_path / "small.h5")
    _add(path, _codes(max(rows, 40))[:rows])
    with pytest.raises(ClassifyError, match=f"an {kind} index trains on at least {least} rows and the cache has "
                                            f"{rows}; choose kind=flat or kind=hnsw"):
        cnncodes.index(path, kind=kind)
    assert search.indexed_layers(path) == []
    out = run_cli("index", path, "--kind", kind, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "choose --kind flat or --kind hnsw" in out.stderr


def test_rows_added_pruned_and_relabelled_after_indexing_stay_in_step(cache):
    cnncodes.index(cache, kind="ivf")
    # added: committed after the index, searched exactly until the next `index`
    extra = _codes(200, seed=7)
    extra[:5] = _codes_of(cache, np.arange(100, 105)) + 0.001  # copies of five indexed rows
    _add(cache, extra, first=3000)
    with cnncodes.open_cache(cache) as c:
        paths = c.paths
        new_rows = [paths.index(f"{NAMES[i % 3]}/{3000 + i:06d}.jpg") for i in range(5)]
    Q = _codes_of(cache, np.arange(100, 105))
    found, _, how = search.nearest_in_cache(cache, "pool", Q, 3, 1 << 26, np.arange(100, 105))
    assert how == "ivf" and found[:, 0].tolist() == new_rows
    # pruned: the planted copies' rows leave the cache; they never answer, the rest keep their answers
    gone = [f"{NAMES[i % 3]}/{1500 + i:06d}.jpg" for i in range(20)]
    fingerprint = Fingerprint(backbone="synthetic", layers=("pool",), weights="random:0", preprocess={"crop": 224})
    with open_for_append(cache, fingerprint, {"pool": WIDTH}, NAMES, background=False) as session:
        session.remove(gone)
    with cnncodes.open_cache(cache) as c:
        paths = c.paths
        assert not set(gone) & set(paths) and len(paths) == 3180
    rows = np.arange(0, len(paths), 41)
    Q = _codes_of(cache, rows)
    found, _, _ = search.nearest_in_cache(cache, "pool", Q, 10, 1 << 26, rows)
    truth, _ = _exact(cache, Q, 10, rows)
    assert (found < len(paths)).all() and _recall(found, truth) >= 0.9
    near = cnncodes.similar(cache, [paths[0]], k=5)
    assert not set(gone) & {n["path"] for n in near[0]["neighbours"]}
    # relabelled: the index holds nothing a label changes
    with open_for_append(cache, fingerprint, {"pool": WIDTH}, NAMES, background=False) as session:
        session.carry_rows(paths[:50], [(1, 1, 10**6 + i) for i in range(50)], labels=["c"] * 50)
    again = cnncodes.index(cache)
    assert (again.rebuilt, again.added, again.indexed, again.gone, again.rows) == (False, 200, 3180, 20, 3180)
    Q = _codes_of(cache, rows)  # a relabel may move rows: ask again by row number
    found_after, _, _ = search.nearest_in_cache(cache, "pool", Q, 10, 1 << 26, rows)
    assert _recall(found_after, _exact(cache, Q, 10, rows)[0]) >= 0.9
    # up to date: nothing added, nothing rebuilt
    assert (cnncodes.index(cache).added, cnncodes.index(cache).rebuilt) == (0, False)


KILL_BEFORE_COMMIT = """
import os, signal, sys
from cnncodes.classify import index
commit = index._commit
def killed(folder, layer, manifest):
    os.kill(os.getpid(), signal.SIGKILL)  # every new file written; the manifest not yet renamed
index._commit = killed
index.build(sys.argv[1], "pool", kind=sys.argv[2], rebuild=True)
"""


def test_a_kill_during_a_build_leaves_the_previous_index_valid(cache):
    cnncodes.index(cache, kind="flat")
    rows = np.arange(0, 3000, 97)
    Q = _codes_of(cache, rows)
    before = search.nearest_in_cache(cache, "pool", Q, 5, 1 << 26, rows)
    manifest = open(os.path.join(cache + ".faiss", "pool.json")).read()
    # killed at the worst moment: after the new generation's files, before its manifest
    run = subprocess.run([sys.executable, "-c", KILL_BEFORE_COMMIT, cache, "ivfpq"], cwd=ROOT)
    assert run.returncode == -signal.SIGKILL
    # and at seeded moments of a build from scratch
    for delay in (0.05, 0.3, 0.8):
        child = subprocess.Popen([sys.executable, "-c", "import sys; from cnncodes.classify import index; "
                                  "index.build(sys.argv[1], 'pool', kind='hnsw', rebuild=True)", cache], cwd=ROOT)
        try:
            child.wait(timeout=2.0 + delay)
        except subprocess.TimeoutExpired:
            pass
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        now = open(os.path.join(cache + ".faiss", "pool.json")).read()
        if now != manifest:  # the build committed before the kill (or finished): the new index is whole
            assert json.loads(now)["kind"] == "hnsw"
            manifest = now
    assert open(os.path.join(cache + ".faiss", "pool.json")).read() == manifest
    after = search.nearest_in_cache(cache, "pool", Q, 5, 1 << 26, rows)
    assert after[2] == json.loads(manifest)["kind"]
    if after[2] == before[2]:
        np.testing.assert_array_equal(after[0], before[0])
    # the next build commits, and leaves only the files its manifest names
    built = cnncodes.index(cache, kind="ivf", rebuild=True)
    names = sorted(os.listdir(cache + ".faiss"))
    kept = sorted(os.listdir(os.path.join(cache + ".faiss", "rows")))  # each segment's row hashes
    with cnncodes.open_cache(cache) as c:
        segments = {run.content for run in c.row_runs()}
    assert built.kind == "ivf" and len(names) == 5 and not any(n.endswith(".tmp") for n in names), names
    assert kept == sorted(f"{content}.hashes" for content in segments), kept


def test_the_command_line_builds_and_similar_uses_it(cache):
    out = json.loads(run_cli("index", cache, "--kind", "hnsw", "--json").stdout)
    assert (out["kind"], out["indexed"], out["rebuilt"]) == ("hnsw", 3000, True)
    with cnncodes.open_cache(cache) as c:
        query = c.paths[0]
    near = json.loads(run_cli("similar", cache, query, "-k", "3", "--check-recall", "20", "--json").stdout)
    assert near["search"] == "hnsw" and near["recall"]["queries"] == 20
    assert near["queries"][0]["neighbours"][0]["path"] == f"{NAMES[1500 % 3]}/001500.jpg"
    exact = json.loads(run_cli("similar", cache, query, "-k", "3", "--exact", "--json").stdout)
    assert exact["search"] == "exact" and exact["queries"][0]["neighbours"][0]["path"] == f"{NAMES[0]}/001500.jpg"


def test_without_faiss_everything_searches_exactly_and_index_names_the_install(cache, monkeypatch, tmp_path):
    from cnncodes.classify.errors import ClassifyError
    cnncodes.index(cache, kind="ivfpq")
    with cnncodes.open_cache(cache) as c:
        query = c.paths[3]
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError, as uninstalled
    near = cnncodes.similar(cache, [query], k=4)
    assert near.search == "exact"
    truth, _ = _exact(cache, _codes_of(cache, [3]), 4, [3])
    assert [n["row"] for n in near[0]["neighbours"]] == truth[0].tolist()
    with pytest.raises(ClassifyError, match=r"^\S+c\.h5: an index needs faiss.*pip install 'cnncodes\[index\]'"):
        cnncodes.index(cache)
    # the command line, in a process where faiss cannot be imported
    blocker = tmp_path / "nofaiss"
    blocker.mkdir()
    (blocker / "faiss.py").write_text("raise ImportError('no faiss here')\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = subprocess.run([sys.executable, "-m", "cnncodes", "index", cache], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "pip install 'cnncodes[index]'" in run.stderr
    run = subprocess.run([sys.executable, "-m", "cnncodes", "similar", cache, query, "-k", "2", "--json"],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert run.returncode == 0 and json.loads(run.stdout)["search"] == "exact"


EXTRACT = ("--backbone", "mobilenet_v3_small", "--weights", "random", "--crop-size", "32", "--no-progress",
           "--workers", "0", "--batch-size", "4")


def test_extract_brings_the_caches_index_up_to_date(tmp_path):
    """An indexed cache's index takes each extract's new rows (no separate `index`), and a search
    through it then holds every row without an exact pass over the new ones."""
    from conftest import make_image
    from cnncodes.classify.index import open_index
    folder, cache = tmp_path / "photos", str(tmp_path / "c.h5")
    for i in range(6):
        make_image(str(folder / ("red" if i % 2 else "blue") / f"p{i}.jpg"), i)
    run_cli("extract", folder, "--cache", cache, *EXTRACT)
    with cnncodes.open_cache(cache) as c:
        layer = c.first_layer
    cnncodes.index(cache, kind="flat")
    for i in range(6, 10):
        make_image(str(folder / "red" / f"p{i}.jpg"), i)
    out = json.loads(run_cli("extract", folder, "--cache", cache, *EXTRACT, "--json").stdout)
    assert out["written"] == 4 and out["indexed"] == {layer: 4}
    index = open_index(cache, layer)
    index._in_step()
    assert index.unindexed is None and (index.rows_of >= 0).sum() == 10  # every row held, none searched apart
    # the Python face does the same, and says it in its line
    make_image(str(folder / "blue" / "p10.jpg"), 10)
    summary = cnncodes.extract_codes(folder, cache, backbone="mobilenet_v3_small", weights="random", crop_size=32,
                                     workers=0, batch_size=4)
    assert summary.indexed == {layer: 1} and f"index of {layer}: 1 rows added" in summary.line()
    # nothing new: the index is not touched
    assert run_cli("extract", folder, "--cache", cache, *EXTRACT, "--json").stdout.count('"indexed": {}') == 1


def test_a_damaged_row_hash_file_is_computed_again_never_trusted(cache):
    """The hashes kept per segment (CACHE.faiss/rows/) find a query path's row; a flipped bit in one
    must not hide the row (similar would call the path unknown) or map the index to other rows."""
    from cnncodes.classify.row_hashes import row_hashes
    cnncodes.index(cache, kind="flat")
    with cnncodes.open_cache(cache) as c:
        query = c.paths[0]  # the first row of the first segment: its path hash is the bit flipped below
    before = cnncodes.similar(cache, [query], k=3).to_dict()
    truth = row_hashes(cache, memo=False)
    folder = os.path.join(cache + ".faiss", "rows")
    for name in os.listdir(folder):  # one bit of every kept file flipped, in the path hashes' column
        path = os.path.join(folder, name)
        data = bytearray(open(path, "rb").read())
        data[32 + 8] ^= 1
        open(path, "wb").write(bytes(data))
    assert cnncodes.similar(cache, [query], k=3).to_dict() == before
    for got, want in zip(row_hashes(cache), truth):
        np.testing.assert_array_equal(got, want)
