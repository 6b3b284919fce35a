"""Stage one's options have one owner each: CodeSpec (what codes) or RunOptions (how to run)."""
import pytest

from cnncodes.extract.config import CodeSpec, RunOptions
from cnncodes.extract.errors import ExtractError
from cnncodes.extract.runner import ExtractConfig

# Fields the command line does not offer (library callers and benchmarks set them).
LIBRARY_ONLY = {"split_fractions", "channels_last", "max_pixels", "only"}  # only: the paths rank samples


def test_every_extract_option_is_a_field_of_one_dataclass():
    from cnncodes import cli
    args = cli.build_parser().parse_args(["extract", "data", "--cache", "c.h5"])
    cli = set(vars(args)) - {"command", "func", "data", "cache", "json"}  # json: how the CLI prints, not a run option
    code_fields, run_fields = CodeSpec.field_names(), RunOptions.field_names()
    assert not code_fields & run_fields
    assert cli <= code_fields | run_fields, cli - code_fields - run_fields
    assert (code_fields | run_fields) - cli == LIBRARY_ONLY


def test_the_cli_fills_the_dataclasses_by_name():
    from cnncodes import cli
    args = cli.build_parser().parse_args(
        ["extract", "d", "--cache", "c.h5", "--backbone", "resnet18", "--layer", "layer3,pre_logits", "--views", "2",
         "--workers", "0", "--no-progress", "--shard-rows", "64", "--precision", "int8", "--calibration-images", "8"])
    codes, run = CodeSpec.from_args(args), RunOptions.from_args(args)
    assert codes == CodeSpec("resnet18", ("layer3", "pre_logits"), views=2, precision="int8", calibration_images=8)
    assert run == RunOptions(workers=0, progress=False, shard_rows=64)
    assert CodeSpec.from_args(cli.build_parser().parse_args(["extract", "d", "--cache", "c"])) == CodeSpec()


@pytest.mark.parametrize("bad,message", [
    (dict(dtype="int4"), "dtype=int4: choose float16 or float32"),
    (dict(decoder="nvjpeg"), "decoder=nvjpeg"),
    (dict(views=-1), "views=-1"),
    (dict(views=2, decoder="torchvision"), "views= draws its crops from PIL images"),
    (dict(jpeg_draft=True, decoder="torchvision"), "jpeg_draft=True works with decoder=pil only"),
    (dict(precision="int8", calibration_images=0), "calibration_images=0"),
    (dict(int8_engine="qnnpack"), "int8_engine=qnnpack: choose x86 or onednn"),
    (dict(crop_size=0), "crop_size=0"),
])
def test_a_code_spec_checks_itself(bad, message):
    with pytest.raises(ExtractError, match=message):
        CodeSpec(**bad)


def test_run_options_check_themselves_and_extract_config_routes_fields():
    with pytest.raises(ExtractError, match="engine=spark"):
        RunOptions(engine="spark")
    with pytest.raises(ExtractError, match="shard_rows=0"):
        RunOptions(shard_rows=0)
    config = ExtractConfig("d", "c.h5", weights="random", workers=0, views=1)
    assert config.codes == CodeSpec(weights="random", views=1) and config.run == RunOptions(workers=0)
    assert config.codes.weights == "random" and config.run.workers == 0
    assert not hasattr(config, "weights")  # read from the dataclass that owns it, never forwarded
    with pytest.raises(TypeError, match="has no option 'wieghts' \\(did you mean 'weights'\\?\\)"):
        ExtractConfig("d", "c.h5", wieghts="random")


def test_layers_are_read_in_one_place_and_kept_as_a_tuple():
    from cnncodes.extract.config import DEFAULT_LAYERS, layer_names
    assert layer_names(None) == DEFAULT_LAYERS == ()
    assert layer_names("fc7") == ("fc7",)
    assert layer_names("avgpool,stage6") == layer_names("avgpool+stage6") == layer_names(["avgpool", "stage6"]) \
        == ("avgpool", "stage6")
    assert CodeSpec(layers="a+b").layers == CodeSpec(layers=["a", "b"]).layers == ("a", "b")
    assert CodeSpec().layers == DEFAULT_LAYERS
