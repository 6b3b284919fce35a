"""The network's own top trained on cached maps: map layers, the top's start, its recipes, its
model files, predict through backbone + top, and the refusals between maps and codes."""
import numpy as np
import pytest
import torch

from conftest import FAST_VGG, make_folder, run_cli

# The real ImageNet weights (a core dependency): a random Lite0's stage-7 maps are ~1e-8, zero in float16.
LITE = ("--backbone", "efficientnet_lite0", "--no-progress", "--workers", "0", "--batch-size", "8")


@pytest.fixture(scope="module")
def lite_maps(tmp_path_factory):
    """A Lite0 cache of pooled stage-7 codes and the stage-7 map, one augmented
    view per train image; and its photo folder."""
    root = tmp_path_factory.mktemp("top")
    make_folder(str(root / "images"), per_class=8)
    cache = str(root / "maps.h5")
    run_cli("extract", root / "images", "--cache", cache, *LITE, "--layer", "stage7,stage7_map", "--views", "1")
    return cache, root / "images"


@pytest.mark.parametrize("backbone,layer,pooled", [("efficientnet_lite0", "stage7_map", "stage7"),
                                                   ("vgg16", "pool5_map", "pool5")])
def test_the_top_on_a_map_is_the_network_from_the_boundary(backbone, layer, pooled):
    """Before training, the top with the network's own final layer on the cut's map gives the
    network's own logits; the map's average is the pooled code."""
    from cnncodes.extract.backbones import get_backbone
    from cnncodes.extract.backbones.base import _seeded_network
    from cnncodes.extract.backbones.network_top import network_top
    from cnncodes.extract.weights import ResolvedWeights
    spec = get_backbone(backbone)
    shape = spec.map_shapes([layer])[layer]
    assert spec.widths([layer])[layer] == int(np.prod(shape)) and spec.widths([pooled])[pooled] == shape[0]
    weights = ResolvedWeights(identity="random:2", seed=2)
    x = torch.randn(2, 3, spec.preprocess.crop, spec.preprocess.crop)
    with torch.no_grad():
        out = spec.build(weights, (pooled, layer))(x)
        own = _seeded_network(spec, weights, None).eval()(x)
        top, final = network_top(backbone, "random:2", layer, shape)
        from_map = final(top(out[layer]))
    torch.testing.assert_close(out[layer].view(2, *shape).mean(dim=(2, 3)), out[pooled])
    torch.testing.assert_close(from_map, own, rtol=1e-5, atol=1e-5)


def test_a_map_cache_records_its_shapes_and_maps_average_to_the_pooled_codes(lite_maps):
    from cnncodes.cache import open_cache
    cache, _ = lite_maps
    with open_cache(cache) as c:
        assert c.fingerprint.map_shapes == {"stage7_map": [320, 7, 7]}
        assert c.width("stage7_map") == 320 * 49
        maps, pooled = c.codes("stage7_map"), c.codes("stage7")
    means = maps.reshape(len(maps), 320, 49).mean(axis=2)
    np.testing.assert_allclose(means, pooled, atol=2e-2 * np.abs(pooled).max())  # both stored as float16


def test_the_top_starts_from_the_weights_the_codes_came_from(lite_maps):
    """With a learning rate of 0 the fitted top is the network's own top, number for number."""
    from cnncodes.classify import read_codes
    from cnncodes.classify.heads.network_top import NetworkTopClassifier
    from cnncodes.extract.backbones.network_top import network_top, state_vector
    data = read_codes(lite_maps[0], "stage7_map")
    weights = data.fingerprint.weights
    head = NetworkTopClassifier("efficientnet_lite0", weights, "stage7_map", [320, 7, 7], lr=0.0, epochs=1)
    head.fit(data.X[:12], data.y[:12])
    top, _ = network_top("efficientnet_lite0", weights, "stage7_map", [320, 7, 7])
    start = state_vector(top).numpy()
    np.testing.assert_array_equal(head.state_[:len(start)], start)


def test_top_fits_round_trips_and_predict_rebuilds_backbone_and_top(lite_maps, tmp_path):
    from cnncodes.classify import fit_and_evaluate, read_codes, read_model_file, save_model
    from cnncodes.classify.model_file import model_meta
    from cnncodes.classify.deploy.predict import predict_images
    cache, images = lite_maps
    data = read_codes(cache, "stage7_map")
    result, model = fit_and_evaluate(data, "top")
    assert result["layer"] == "stage7_map" and result["scaling"] == "none" and "lr" in result["params"]
    assert result["n_fit"] > np.count_nonzero(data.splits == "train") / 2  # views train too
    path = str(tmp_path / "top.npz")
    save_model(path, model, model_meta("top", result, data))
    loaded = read_model_file(path)
    np.testing.assert_allclose(loaded.predict_proba(data.X), model.predict_proba(data.X), rtol=1e-5, atol=1e-6)
    with np.load(path, allow_pickle=False) as f:
        assert all(f[k].dtype.kind != "O" for k in f.files)

    centre = np.flatnonzero(data.views == 0)
    from cnncodes.cache import open_cache
    with open_cache(cache) as c:
        paths = c.paths_of(centre)
    predictions, failures = predict_images(path, [str(images)], top_k=3)
    assert not failures and len(predictions) == len(centre)
    by_path = {p["path"]: p for p in predictions}
    expected = loaded.predict_proba(data.X[centre])
    for path_, row in zip(paths, expected):
        got = {t["label"]: t["probability"] for t in by_path[str(images / path_)]["top_k"]}
        want = {loaded.class_names[int(loaded.classes[j])]: p for j, p in enumerate(row)}
        assert max(abs(got[k] - want[k]) for k in got) < 2e-2  # new photos' maps, computed again


def test_maps_and_codes_refuse_each_others_heads_in_one_line(lite_maps):
    from cnncodes.classify import ClassifyError, compare, fit_and_evaluate, read_codes
    cache, _ = lite_maps
    maps, codes = read_codes(cache, "stage7_map"), read_codes(cache, "stage7")
    assert read_codes(cache).layer == "stage7"  # the default layer leaves maps out
    with pytest.raises(ClassifyError, match="stage7_map is an unpooled map; fit classifier=top") as e:
        fit_and_evaluate(maps, "logreg")
    assert "\n" not in str(e.value)
    with pytest.raises(ClassifyError, match="holds pooled codes; extract a map layer") as e:
        fit_and_evaluate(codes, "top")
    assert "\n" not in str(e.value)
    proc = run_cli("fit", cache, "--layer", "stage7_map", check=False)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0 and "unpooled map" in proc.stderr
    assert [r["classifier"] for r in compare(maps)] == ["top", "seed-top"]


def test_seed_top_replays_the_exercise_on_vgg16_pool5_maps(tmp_path, monkeypatch):
    """fc6, fc7 from the weights and a new fc8 train with SGD lr 0.001 (momentum 0.9), batches of
    20, 2 epochs, VGG's dropout on."""
    from cnncodes.classify import fit_and_evaluate, read_codes
    make_folder(str(tmp_path / "images"), per_class=9)
    cache = str(tmp_path / "vgg.h5")
    run_cli("extract", tmp_path / "images", "--cache", cache, *FAST_VGG, "--layer", "pool5_map")
    data = read_codes(cache)
    assert data.layer == "pool5_map" and data.fingerprint.map_shapes == {"pool5_map": [512, 1, 1]}  # crop 32
    steps, made = [], []
    real_sgd = torch.optim.SGD

    class CountingSGD(real_sgd):
        def __init__(self, params, **kw):
            made.append(kw)
            super().__init__(params, **kw)

        def step(self, closure=None):
            steps.append(1)
            return super().step(closure)
    monkeypatch.setattr(torch.optim, "SGD", CountingSGD)
    result, model = fit_and_evaluate(data, "seed-top")
    assert made == [{"lr": 0.001, "momentum": 0.9}]
    assert len(steps) == 2 * -(-result["n_fit"] // 20)
    net = model.steps[-1][1]._trained()
    dropouts = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 2 and all(d.p == 0.5 for d in dropouts)
    assert net[1].out_features == 3 and net[1].in_features == 4096
