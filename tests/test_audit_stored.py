"""The audit holds the codes as the cache stores them (float16: half a float32 copy's memory, read
3-4x faster) and converts what it computes on, a block or a gathered sample at a time. Every
finding must equal the one computed from a float32 copy: float16 -> float32 is exact, and the rows
the leak's model leaves out (sampled away, unlabelled, excluded) change neither its plan nor its fit."""
import numpy as np
import pytest

import cnncodes
from cnncodes.api import codes as codes_api
from cnncodes.cache import Fingerprint, open_cache, open_for_append
from cnncodes.classify import audit as audit_module

WIDTH = 24
NAMES = ["a", "b", "c"]
N = 900


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Three classes, train/val/test, some photos unlabelled, planted near copies and label flips."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, N)
    X = (np.eye(3, WIDTH)[y] * 2.5 + rng.normal(0, 1, (N, WIDTH))).astype(np.float32)
    X[N // 2:N // 2 + 12] = X[:12] + rng.normal(0, 0.01, (12, WIDTH))  # row i + N/2 ~ row i
    classes = [NAMES[c] for c in y]
    for i in range(30, 40):
        classes[i] = NAMES[(y[i] + 1) % 3]  # flipped labels
    for i in range(40, 80):
        classes[i] = None  # unlabelled
    splits = rng.choice(["train", "val", "test"], N, p=[0.7, 0.15, 0.15])
    path = str(tmp_path_factory.mktemp("audit_stored") / "c.h5")
    fingerprint = Fingerprint(backbone="synthetic", layers=("pool",), weights="random:0", preprocess={"crop": 224})
    with open_for_append(path, fingerprint, {"pool": WIDTH}, NAMES, background=False) as session:
        for start in range(0, N, 300):
            rows = range(start, start + 300)
            session.add_rows([f"p/{i:05d}.jpg" for i in rows], [f"{i:064x}" for i in rows],
                             list(splits[start:start + 300]), classes[start:start + 300], [(1, 1, i) for i in rows],
                             {"pool": X[start:start + 300]})
            session.commit_shard()
    return path


def test_the_cache_reads_its_codes_as_stored_or_as_float32(cache):
    with open_cache(cache) as c:
        stored, converted = c.codes("pool", dtype=None), c.codes("pool")
        some = c.codes("pool", rows=np.arange(N) % 7 == 0, dtype=None)
    assert stored.dtype == np.float16 and converted.dtype == np.float32
    np.testing.assert_array_equal(stored.astype(np.float32), converted)
    np.testing.assert_array_equal(some, stored[::7])


def test_the_audit_of_stored_codes_equals_the_audit_of_a_float32_copy(cache, monkeypatch):
    seen = []
    original = codes_api.load_every_row

    def load(*args, stored=False, **kwargs):
        data = original(*args, stored=stored, **kwargs)
        seen.append(data.X.dtype)
        return data
    monkeypatch.setattr(codes_api, "load_every_row", load)
    monkeypatch.setattr(audit_module, "AUDIT_FIT_ROWS", 300)  # the leak's model and each fold train on a sample
    as_stored = cnncodes.audit(cache, threshold=0.97)
    monkeypatch.setattr(codes_api, "load_every_row", lambda *a, stored=False, **k: load(*a, stored=False, **k))
    as_float32 = cnncodes.audit(cache, threshold=0.97)
    assert seen == [np.float16, np.float32]
    assert as_stored.near_duplicates == as_float32.near_duplicates and len(as_stored.near_duplicates) >= 12
    assert as_stored.label_issues == as_float32.label_issues and as_stored.label_issues
    assert as_stored.outliers == as_float32.outliers
    assert as_stored.leaked == as_float32.leaked and as_stored.leaked
    assert as_stored.effect_on_score == as_float32.effect_on_score
    assert 0 < as_stored.effect_on_score["trained_on"] <= 300 < as_stored.effect_on_score["training_rows"]


def test_the_leaks_model_from_stored_codes_is_the_same_fit(cache, tmp_path):
    """effect_on_score gathers the rows that train or report as float32 and drops the rest: the
    same plan and the same model as on a float32 copy of every row, excluded rows present."""
    from cnncodes.classify.data import read_codes
    excluded = tmp_path / "exclude.txt"
    excluded.write_text("".join(f"p/{i:05d}.jpg\n" for i in range(100, 160)))
    for exclude in (None, str(excluded)):
        loads = [codes_api.load_every_row(cache, "pool", stored=stored, exclude=exclude) for stored in (True, False)]
        assert [d.X.dtype for d in loads] == [np.float16, np.float32]
        leaked = [p for p in loads[0].paths[:60] if p.endswith("5.jpg")]
        assert audit_module.effect_on_score(loads[0], leaked) == audit_module.effect_on_score(loads[1], leaked)
    assert read_codes(cache, "pool").X.dtype == np.float32  # every other reader: float32 as before
