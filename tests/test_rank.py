"""`rank`: candidates measured on one sample of the user's photos; the winner's full extract
afterwards reads only the photos the sample did not hold."""
import json

import numpy as np
import pytest

import cnncodes
from cnncodes.classify.transferability import logme
from conftest import ROOT, run_cli

DEMO = f"{ROOT}/cnncodes/demo_data/flowers"  # 200 real photos, 40 per class, train/val folders


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    caches = tmp_path_factory.mktemp("rank")
    ranking = cnncodes.rank_backbones(DEMO, "resnet18=random,efficientnet_lite0", sample=50, caches=caches,
                                      precision="fp32", workers=0)
    return caches, ranking


def test_rank_scores_each_candidate_on_the_same_stratified_sample(ranked):
    caches, ranking = ranked
    assert ranking.sample == 50 and ranking.per_class == dict.fromkeys(
        ["daisy", "dandelion", "roses", "sunflowers", "tulips"], 10)
    best, other = ranking.rows
    assert best.candidate == "efficientnet_lite0" and other.candidate == "resnet18=random"  # real beats random
    assert best.logme > other.logme and best.knn_accuracy > other.knn_accuracy and best.p_vs_best is None
    for row in ranking.rows:
        low, high = row.probe_ci95
        assert low <= row.probe_accuracy <= high and row.failed is None and row.images_per_second > 0
        assert row.width == {"efficientnet_lite0": 1472, "resnet18=random": 512}[row.candidate]
        with cnncodes.open_cache(row.cache) as c:
            assert len(c) == 50 and row.bytes_per_image > row.width  # the sample, and only it
    on_disk = json.loads((caches / "rank.json").read_text())
    assert [r["candidate"] for r in on_disk["rows"]] == [r.candidate for r in ranking.rows]
    assert ranking.next_command.endswith(f"--cache {best.cache} --backbone efficientnet_lite0")
    assert ranking.plot(caches / "again.png") and (caches / "again.png").stat().st_size > 10_000


def test_the_winners_full_extract_reads_only_the_rest_and_equals_a_fresh_one(ranked, tmp_path):
    _, ranking = ranked
    best = ranking.best
    rest = cnncodes.extract_codes(DEMO, best.cache, backbone=best.backbone, precision="fp32", workers=0)
    assert (rest.written, rest.skipped) == (150, 50)
    fresh = tmp_path / "fresh.h5"
    cnncodes.extract_codes(DEMO, fresh, backbone=best.backbone, precision="fp32", workers=0)
    a, b = cnncodes.load_codes(str(best.cache)), cnncodes.load_codes(str(fresh))
    order = {p: i for i, p in enumerate(b.paths)}
    np.testing.assert_array_equal(a.X, b.X[[order[p] for p in a.paths]])


def test_rank_again_extracts_nothing_and_keeps_the_speed_it_measured(ranked):
    caches, ranking = ranked
    again = cnncodes.rank_backbones(DEMO, "resnet18=random", sample=50, caches=caches, precision="fp32", workers=0)
    (row,) = again.rows
    first = next(r for r in ranking.rows if r.candidate == "resnet18=random")
    assert row.images_per_second == first.images_per_second and row.probe_accuracy == first.probe_accuracy


def test_bad_candidates_and_classes_are_one_line_each(tmp_path):
    out = run_cli("rank", DEMO, "--backbones", "resnet181,efficientnet_lite0", "--caches", tmp_path / "c",
                  check=False)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "did you mean resnet18" in out.stderr and not (tmp_path / "c").exists()  # checked before any extract
    out = run_cli("rank", DEMO, "--backbones", "vgg16=/nowhere/w.pth,resnet18=random", "--sample", "25",
                  "--caches", tmp_path / "c", "--crop-size", "64", "--json", check=False)
    rows = json.loads(out.stdout)["rows"]
    assert [r["candidate"] for r in rows] == ["resnet18=random", "vgg16=/nowhere/w.pth"]  # the failure goes last
    assert rows[0]["probe_accuracy"] is not None and "no such weights file" in rows[1]["failed"]
    few = tmp_path / "few"
    for cls, n in (("a", 6), ("b", 3)):
        (few / cls).mkdir(parents=True)
        for i in range(n):
            (few / cls / f"{i}.jpg").write_bytes(_jpeg(i))
    out = run_cli("rank", few, "--backbones", "resnet18=random", "--caches", tmp_path / "c2", check=False)
    assert out.returncode == 2 and "too few in: b (3)" in out.stderr and out.stderr.strip().count("\n") == 0


def _jpeg(seed) -> bytes:
    import io

    from PIL import Image
    img = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


def _dense_evidence(F, target, iterations=200):
    """MacKay's updates with dense matrices, to convergence: an independent LogME of one target."""
    N, D = F.shape
    alpha = beta = 1.0
    for _ in range(iterations):
        A = alpha * np.eye(D) + beta * F.T @ F
        m = beta * np.linalg.solve(A, F.T @ target)
        eig = np.linalg.eigvalsh(beta * F.T @ F)
        gamma = float((eig / (alpha + eig)).sum())
        alpha, beta = gamma / float(m @ m), (N - gamma) / float(((target - F @ m) ** 2).sum())
    A = alpha * np.eye(D) + beta * F.T @ F
    m = beta * np.linalg.solve(A, F.T @ target)
    return (D / 2 * np.log(alpha) + N / 2 * np.log(beta) - alpha / 2 * m @ m
            - beta / 2 * ((target - F @ m) ** 2).sum() - np.linalg.slogdet(A)[1] / 2 - N / 2 * np.log(2 * np.pi)) / N


def test_logme_is_the_evidence_at_its_fixed_point():
    rng = np.random.default_rng(0)
    n, d = 120, 20
    y = np.arange(n) % 3
    F = rng.normal(size=(3, d))[y] + rng.normal(size=(n, d))
    expected = np.mean([_dense_evidence(F, (y == c).astype(float)) for c in range(3)])
    for spectrum in ("gram", "svd"):  # the two roads to F's spectrum (auto takes svd where n <= d)
        assert logme(F, y, iterations=200, tol=1e-9, spectrum=spectrum) == pytest.approx(expected, rel=1e-4)
    wide = rng.normal(size=(3, 200))[y] + 3 * rng.normal(size=(n, 200))  # fewer rows than dimensions
    assert logme(wide, y, spectrum="gram") == pytest.approx(logme(wide, y, spectrum="svd"), rel=1e-6)
    assert logme(F, y) > logme(rng.normal(size=(n, d)), y)  # informative codes score higher than noise
