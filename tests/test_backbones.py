"""The model zoo: each family's codes equal the library's own pre-logits for the library's own
preprocessing (random weights, fp32), the real EfficientNet-Lite weights classify real photos,
and names resolve (or fail with "did you mean") through one registry."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, make_folder, run_cli
from cnncodes.extract import Extractor
from cnncodes.extract.config import CodeSpec, RunOptions
from cnncodes.extract.backbones import get_backbone
from cnncodes.extract.errors import ExtractError
from cnncodes.extract.sources import Record

PHOTOS = 3


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A few photos of different shapes: real flowers (square in flowers5) re-saved wide and tall
    too, so resize rules that differ only off the square (shorter side vs squash) are told apart."""
    from conftest import FLOWERS5
    root = tmp_path_factory.mktemp("photos")
    if os.path.isdir(FLOWERS5):
        folder = os.path.join(FLOWERS5, "val", "daisy")
        sources = [os.path.join(folder, f) for f in sorted(os.listdir(folder))[:PHOTOS]]
    else:
        make_folder(str(root / "made"), per_class=1)
        sources = sorted(str(p) for p in (root / "made").rglob("*.jpg"))[:PHOTOS]
    out = []
    for i, (source, size) in enumerate(zip(sources, [(320, 200), (180, 300), None])):
        image = Image.open(source).convert("RGB")
        path = str(root / f"p{i}.png")  # lossless: the shape changes, nothing else
        (image.resize(size, Image.BICUBIC) if size else image).save(path)
        out.append(path)
    return out


def cnncodes_codes(name, photos, layers=(), crop_size=None):
    extractor = Extractor.for_new_codes(CodeSpec(name, layers, weights="random:0", dtype="float32", precision="fp32",
                                                 crop_size=crop_size), options=RunOptions(workers=0))
    records = [Record(path=p, abspath=p, label=None) for p in photos]
    batches = list(extractor.encode(records, views=False))
    assert [i for b in batches for i in b.indices] == list(range(len(photos)))
    return extractor, {layer: np.concatenate([b.codes[layer] for b in batches]) for layer in extractor.fingerprint.layers}


def assert_cosine(ours, theirs, at_least=0.9999):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape
    cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    assert cos.min() >= at_least, cos


def library_inputs(transform, photos):
    return torch.stack([transform(Image.open(p).convert("RGB")) for p in photos])


def assert_same_pixels(preprocess, transform, photo):
    """Our uint8 crop, normalised as the device does it, equals the library's float transform."""
    ours = preprocess.normalizer("cpu")(preprocess.pil_transform()(Image.open(photo).convert("RGB"))[None])[0]
    theirs = transform(Image.open(photo).convert("RGB"))
    assert ours.shape == theirs.shape
    # The library's float pipeline vs our uint8 crop: a resize rounds to 8 bits in both (PIL), so
    # the only difference left is float arithmetic.
    assert float((ours - theirs).abs().max()) < 1e-4


# --- torchvision -----------------------------------------------------------------------------

TORCHVISION_SAMPLE = {"resnet18": "fc", "efficientnet_b0": "classifier.1", "convnext_tiny": "classifier.2",
                      "mobilenet_v3_small": "classifier.3", "vit_b_16": "heads.head", "swin_t": "head"}


@pytest.mark.parametrize("name", list(TORCHVISION_SAMPLE))
def test_torchvision_pre_logits_equal_the_classifier_input(name, photos):
    from torchvision.models import get_model, get_model_weights
    extractor, codes = cnncodes_codes(name, photos)
    weights = get_model_weights(name).DEFAULT
    assert extractor.fingerprint.preprocess["crop"] == weights.transforms().crop_size[0]
    assert_same_pixels(extractor.preprocess, weights.transforms(), photos[0])
    torch.manual_seed(0)
    model = get_model(name, weights=None).eval()
    seen = {}
    classifier = dict(model.named_modules())[TORCHVISION_SAMPLE[name]]
    classifier.register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        model(library_inputs(weights.transforms(), photos))
    assert_cosine(codes["pre_logits"], seen["x"].flatten(1).numpy())
    assert extractor.fingerprint.provenance["backbone_library"].startswith("torchvision ")


def test_torchvision_graph_nodes_and_tags(photos):
    _, codes = cnncodes_codes("resnet18", photos[:1], layers=("layer3", "pre_logits"))
    assert codes["layer3"].shape == (1, 256) and codes["pre_logits"].shape == (1, 512)
    spec = get_backbone("resnet50.IMAGENET1K_V1")
    assert spec.preprocess.resize == 256 and get_backbone("resnet50").preprocess.resize == 232  # V1 vs V2 recipes
    with pytest.raises(ExtractError, match=r"did you mean resnet50"):
        get_backbone("resnet5").preprocess
    with pytest.raises(ExtractError, match="IMAGENET1K_V1, IMAGENET1K_V2"):
        get_backbone("resnet50.V9").preprocess
    with pytest.raises(ExtractError, match="no classifier"):
        get_backbone("vgg16.IMAGENET1K_FEATURES").preprocess
    with pytest.raises(ExtractError, match=r"did you mean layer4"):
        get_backbone("resnet18").check_layers(("layer44",))
    with pytest.raises(ExtractError, match="int8: not offered for resnet18"):
        get_backbone("resnet18").check_precision("int8")


# --- timm --------------------------------------------------------------------------------------

TIMM_SAMPLE = [("resnet18.a1_in1k", None), ("vit_tiny_patch16_224.augreg_in21k_ft_in1k", None),
               ("convnext_atto.d2_in1k", None), ("vit_small_patch14_dinov2.lvd142m", 224)]


@pytest.mark.parametrize("name,size", TIMM_SAMPLE)
def test_timm_pre_logits_equal_the_library(name, size, photos):
    timm = pytest.importorskip("timm", reason="timm is the optional extra [zoo]")
    from timm.data import create_transform, resolve_model_data_config
    extractor, codes = cnncodes_codes(f"timm:{name}", photos, crop_size=size)
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=0, **({"img_size": size} if size else {})).eval()
    config = resolve_model_data_config(model)
    if size:  # the DINOv2-shaped ViT at 224: timm's transform for that size, our crop/resize ratio
        config.update(input_size=(3, size, size), crop_pct=size / extractor.preprocess.resize)
    transform = create_transform(**config)
    assert_same_pixels(extractor.preprocess, transform, photos[0])
    with torch.no_grad():
        theirs = model(library_inputs(transform, photos)).numpy()
    assert_cosine(codes["pre_logits"], theirs)


def test_timm_blocks_come_from_forward_intermediates(photos):
    pytest.importorskip("timm", reason="timm is the optional extra [zoo]")
    _, codes = cnncodes_codes("timm:convnext_atto.d2_in1k", photos[:2], layers=("pre_logits", "block2"))
    assert codes["block2"].shape == (2, 160) and codes["pre_logits"].shape == (2, 320)
    with pytest.raises(ExtractError, match="blockN"):
        get_backbone("timm:convnext_atto.d2_in1k").check_layers(("block9",))


# --- open_clip ---------------------------------------------------------------------------------

def test_open_clip_tower_equals_encode_image(photos):
    open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is the optional extra [zoo]")
    extractor, codes = cnncodes_codes("open_clip:ViT-B-32/openai", photos, layers=("pre_projection", "embedding"))
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    preprocess = open_clip.image_transform(224, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN,
                                           std=open_clip.OPENAI_DATASET_STD)  # the tag's recipe
    assert_same_pixels(extractor.preprocess, preprocess, photos[0])
    with torch.no_grad():
        embedding = model.eval().encode_image(library_inputs(preprocess, photos)).numpy()
    assert_cosine(codes["embedding"], embedding)
    assert codes["pre_projection"].shape == (len(photos), 768) and codes["embedding"].shape == (len(photos), 512)


# --- EfficientNet-Lite with real weights ------------------------------------------------------

@pytest.mark.parametrize("k", [0, 1, 2])
def test_lite_real_weights_see_daisies(k, flowers5):
    """Real ImageNet weights: the network's own classifier on cnncodes' avgpool codes calls most
    daisy photos ImageNet's "daisy" (class 985), and the codes equal its own pooled features."""
    name = f"efficientnet_lite{k}"
    folder = os.path.join(flowers5, "val", "daisy")
    photos = [os.path.join(folder, f) for f in sorted(os.listdir(folder))[:8]]
    extractor = Extractor.for_new_codes(CodeSpec(name, ("avgpool",), dtype="float32", precision="fp32"),
                                        options=RunOptions(workers=0))
    records = [Record(path=p, abspath=p, label=None) for p in photos]
    codes = np.concatenate([b.codes["avgpool"] for b in extractor.encode(records, views=False)])
    assert extractor.fingerprint.preprocess["crop"] == (224, 240, 260)[k]
    network = extractor.spec.network(extractor.weights).eval()
    with torch.no_grad():
        logits = network._fc(torch.from_numpy(codes)).numpy()
    assert (logits.argmax(1) == 985).mean() >= 0.5, logits.argmax(1)


def test_a_model_trained_on_another_family_predicts(tmp_path):
    data = tmp_path / "data"
    make_folder(str(data), per_class=4)
    cache, model = tmp_path / "c.h5", tmp_path / "m.npz"
    run_cli("extract", data, "--cache", cache, "--backbone", "mobilenet_v3_small", "--weights", "random:1",
            "--crop-size", "64", "--workers", "0", "--no-progress")
    run_cli("fit", cache, "--classifier", "centroid", "--model", model)
    out = run_cli("predict", model, data / "red")
    assert out.stdout.count(".jpg") == 4


def test_listing_names_every_torchvision_classifier_and_no_torch_for_help():
    import torchvision
    from cnncodes.extract.backbones.listing import list_backbones
    rows, _ = list_backbones(probe=False)
    names = {r["name"] for r in rows}
    assert set(torchvision.models.list_models(module=torchvision.models)) <= names
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= names
    vgg = next(r for r in rows if r["name"] == "vgg16")
    assert vgg["layers"] == "fc7" and vgg["top1"] == pytest.approx(71.592) and vgg["gmacs"] == pytest.approx(15.47)
    listed = run_cli("backbones", "resnet1*")
    assert "resnet18" in listed.stdout and " 512 " in listed.stdout
    probe = "import sys; from cnncodes import cli; cli.build_parser().parse_args(['extract', '-h'])"
    out = subprocess.run([sys.executable, "-c", probe + "\n"], capture_output=True, text=True, cwd=ROOT)
    assert "timm:NAME" in out.stdout
    check = ("import sys\nfrom cnncodes import cli\ntry:\n    cli.build_parser().parse_args(['extract', '-h'])\n"
             "except SystemExit:\n    pass\nprint([m for m in ('torch', 'timm', 'open_clip') if m in sys.modules])")
    heavy = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT)
    assert heavy.stdout.strip().endswith("[]"), heavy.stdout + heavy.stderr


# --- several backbones side by side ------------------------------------------------------------

def test_two_backbones_side_by_side_fit_compare_and_predict(tmp_path):
    import json
    import shutil
    from cnncodes.cache import open_cache
    from cnncodes.classify import read_codes
    from cnncodes.classify.errors import ClassifyError
    from cnncodes.classify.joined import join_caches
    data = tmp_path / "data"
    make_folder(str(data), per_class=4)
    shutil.copy(data / "red" / "0000.jpg", data / "red" / "twin.jpg")  # byte-identical under two names
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    fast = ("--weights", "random:1", "--crop-size", "64", "--workers", "0", "--no-progress", "--dtype", "float32")
    run_cli("extract", data, "--cache", a, "--backbone", "resnet18", *fast)
    run_cli("extract", data, "--cache", b, "--backbone", "mobilenet_v3_small", "--layer", "pre_logits,features.6",
            *fast)
    joined = join_caches(read_codes(str(a)), [str(b)])
    alone_a, alone_b = read_codes(str(a)), read_codes(str(b))
    assert joined.X.shape == (13, 512 + 1024 + 40)
    np.testing.assert_array_equal(joined.X[:, :512], alone_a.X)
    # the other cache's rows in the primary's order, matched by path (the twin has the same content key)
    with open_cache(str(a)) as ca, open_cache(str(b)) as cb:
        at = {p: i for i, p in enumerate(cb.paths)}
        order = [at[p] for p in ca.paths]
    np.testing.assert_array_equal(joined.X[:, 512:], alone_b.X[order])

    model = tmp_path / "m.npz"
    fitted = run_cli("fit", a, "--with", b, "--classifier", "centroid", "--model", model)
    assert "side by side" in fitted.stderr and "1576-d" in fitted.stderr
    out = run_cli("predict", model, data / "red", "--json")
    assert len(json.loads(out.stdout)["predictions"]) == 5
    compared = run_cli("compare", a, "--with", b, "--classifiers", "centroid,ridge", "--report", tmp_path / "r")
    assert "ridge" in compared.stdout

    os.remove(data / "blue" / "0001.jpg")
    c = tmp_path / "c.h5"
    run_cli("extract", data, "--cache", c, "--backbone", "mobilenet_v3_small", *fast)
    with pytest.raises(ClassifyError, match=r"rows do not match .*\(1 missing there"):
        join_caches(read_codes(str(a)), [str(c)])
    refused = run_cli("fit", a, "--with", c, "--classifier", "centroid", check=False)
    assert refused.returncode == 2 and "rows do not match" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize("name", ["timm:convnext_atto.d2_in1k", "open_clip:ViT-B-32/openai"])
def test_weights_file_loads_through_the_library(name, photos, tmp_path):
    """--weights FILE for the families whose library loads the file itself (with the tag's config)."""
    pytest.importorskip(name.partition(":")[0], reason="the optional extra [zoo]")
    spec = get_backbone(name)
    from cnncodes.extract.weights import ResolvedWeights
    torch.manual_seed(7)
    network = spec.network(ResolvedWeights(identity="random:7", seed=7))
    if name.startswith("open_clip"):  # open_clip reads a whole CLIP checkpoint: save the full model's
        import open_clip
        torch.manual_seed(7)
        state = open_clip.create_model(spec.arch, pretrained=None).state_dict()
    else:
        state = network.state_dict()
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    extractor = Extractor.for_new_codes(CodeSpec(name, weights=str(path), dtype="float32", precision="fp32"),
                                        options=RunOptions(workers=0))
    assert extractor.fingerprint.weights.startswith("file:weights.pt sha256:")
    records = [Record(path=p, abspath=p, label=None) for p in photos[:2]]
    ours = np.concatenate([b.codes[extractor.spec.first_default_layer] for b in extractor.encode(records, views=False)])
    _, random_codes = cnncodes_codes(name, photos[:2])
    expected = extractor.spec.cut(network.eval(), extractor.spec.defaults)
    x = torch.stack([extractor.preprocess.normalizer("cpu")(extractor.preprocess.pil_transform()(
        Image.open(p).convert("RGB"))[None])[0] for p in photos[:2]])
    with torch.no_grad():
        theirs = expected(x)[extractor.spec.first_default_layer].numpy()
    assert_cosine(ours, theirs)
    assert not np.allclose(ours, random_codes[extractor.spec.first_default_layer])  # the file's weights, not seed 0's


def test_zoo_backbone_with_views_and_verify_recompute(tmp_path):
    pytest.importorskip("timm", reason="timm is the optional extra [zoo]")
    data = tmp_path / "data"
    make_folder(str(data), per_class=3)
    cache = tmp_path / "c.h5"
    run_cli("extract", data, "--cache", cache, "--backbone", "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k",
            "--weights", "random:2", "--views", "1", "--workers", "0", "--no-progress")
    verified = run_cli("verify", cache, "--recompute", "6", "--json")
    import json
    report = json.loads(verified.stdout)
    assert report["ok"] and report["recomputed"] >= 6 and report["worst_cosine"] > 0.999


def test_open_clip_siglip_squashes_as_its_config_says(photos):
    """SigLIP's configs resize both sides (no crop): the tag's own transform, pixel for pixel."""
    open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is the optional extra [zoo]")
    pytest.importorskip("timm", reason="SigLIP's tower is a timm model")
    extractor, codes = cnncodes_codes("open_clip:ViT-B-16-SigLIP/webli", photos[:2], layers=("embedding",))
    assert extractor.fingerprint.preprocess["squash"] is True
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-SigLIP", pretrained=None).eval()
    cfg = open_clip.get_pretrained_cfg("ViT-B-16-SigLIP", "webli")
    transform = open_clip.image_transform(224, is_train=False, mean=cfg["mean"], std=cfg["std"],
                                          interpolation=cfg["interpolation"], resize_mode=cfg["resize_mode"])
    assert_same_pixels(extractor.preprocess, transform, photos[0])
    with torch.no_grad():
        theirs = model.encode_image(library_inputs(transform, photos[:2])).numpy()
    assert_cosine(codes["embedding"], theirs)
