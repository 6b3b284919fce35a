"""Stage one's vocabularies and defaults, in one torch-free place: the modules that act on an
option and the command line (argparse choices, defaults and --help) read them from here."""

DEFAULT_BACKBONE = "vgg16"                              # the classic exercise's network (extract/backbones/)
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")   # compute precision (auto: extract/device.py)
DTYPES = ("float16", "float32")                         # how codes are stored
DECODERS = ("pil", "torchvision", "gpu")            # gpu: nvJPEG on the device (extract/tensor_decoding.py)
INT8_ENGINES = ("x86", "onednn")                        # int8 kernel libraries
DEFAULT_INT8_ENGINE = "x86"
DEFAULT_CALIBRATION_IMAGES = 64
ENGINE_NAMES = ("local", "ray")                         # where encoding runs (extract/engines/)
RUNTIMES = ("torch", "onnxruntime")                     # what runs the network (extract/onnx_network.py)
DEFAULT_SHARD_ROWS = 512                                # rows per committed shard: what a kill can lose at most

# verify --recompute: a re-extracted code whose cosine to the stored one is below this is a problem.
RECOMPUTE_MIN_COSINE = 0.99
