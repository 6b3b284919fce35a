"""The compute side of the runner: batches of decoded images in, codes out, on one device.

Shared by extract (codes go to the cache) and predict (codes go to a classifier).
"""
import contextlib
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from .allocator import freed_memory_kept
from .batch_ring import BatchRing, RingBatches, as_is, copy_into
from .dataset import ImageRecords, collate
from .config import RunOptions
from .device import PRECISIONS, batching
from .tensor_decoding import finish_batch
from .workers import ExitWithParent


@dataclass
class EncodedBatch:
    """One batch of records [start, start + count) of the list given to the encoder, encoded.
    Every position is a position in that list (the one numbering of an extract run)."""
    indices: list   # positions in the record list of the rows in codes
    codes: dict     # layer -> float32 numpy [len(indices), D]
    failed: list    # (position, reason)
    keys: dict = field(default_factory=dict)        # position -> content key, for every record of the batch
    unchanged: list = field(default_factory=list)   # positions whose bytes match the key the cache holds
    views: list = None   # view index of each row (0: centre; extract --views); None: every row a centre view
    mirrored: dict = None  # layer -> codes of each row's mirror image (test-time views, predict --tta)
    read_ns: dict = field(default_factory=dict)  # position -> when the file's read began (ns)
    start: int = 0
    count: int = 0

    def images(self) -> int:
        """Records encoded (a record with views has several rows)."""
        return len(self.indices) if self.views is None else self.views.count(0)

    def __len__(self):
        """Records accounted for: encoded, failed or unchanged."""
        return self.images() + len(self.failed) + len(self.unchanged)

    def shifted(self, delta: int) -> "EncodedBatch":
        """The same batch numbered in a list where its records begin ``delta`` later (a Ray worker
        encodes one batch of the run's list at a time)."""
        self.indices = [i + delta for i in self.indices]
        self.failed = [(i + delta, reason) for i, reason in self.failed]
        self.unchanged = [i + delta for i in self.unchanged]
        self.keys = {i + delta: key for i, key in self.keys.items()}
        self.read_ns = {i + delta: ns for i, ns in self.read_ns.items()}
        self.start += delta
        return self


@dataclass(frozen=True)
class EncodePlan:
    """What one pass of the encoder does beyond the run's options (RunOptions): where, in what
    precision, and which rows.

    decode_on_device: JPEGs decoded in the main process on ``device`` rather than in the workers
    (None: with the gpu decoder).
    uint8_ring: the workers copy uint8 images into a shared ring (pinned where CUDA is there) and
    the normalising and memory layout happen on ``device``, in the network's input precision
    (None: on CUDA; the CPU keeps its float ring, normalised by the workers).
    codes_dtype: the codes come back in this torch dtype, cast on the device (float16: what the
    cache stores, at half the bytes; the same bits as casting on the CPU); None: float32.
    fixed_size: the network always sees exactly ``batch_size`` rows (fixed_batch): a short batch (the last one,
    or one with failed or unchanged records) is padded with zeros and a longer one (augmented
    views, mirrored images) is cut into full ones. A CPU's fp32 kernels (and any compiled graph)
    choose their blocking by batch size, so an image's codes would otherwise change in the 7th
    digit with the number of images that share its batch; this way they do not depend on which
    or how many photos share it, across sources, resumes and kills. (Off only for int8's
    calibration, whose range observers must not see the zero padding.)
    views: a ViewPlan (extract/views.py): train records also yield their augmented views, as rows
    that repeat the record's position. mirrored: also encode each image mirrored (predict --tta).
    """
    device: torch.device
    precision: str = "fp32"           # the autocast precision (a key of extract/device.py's PRECISIONS)
    views: object = None
    mirrored: bool = False
    fixed_size: bool = True
    decode_on_device: bool = None
    uint8_ring: bool = None
    codes_dtype: object = None


def encode_batches(model, preprocess, records, run: RunOptions, plan: EncodePlan):
    """Yield EncodedBatch for consecutive batches of records (objects with .abspath, optionally .known).

    ``run``: its batch size and decoding workers (None: the device's defaults), channels_last,
    max_pixels and compile (torch.compile the model); ``plan``: the rest (EncodePlan).
    """
    device, views = plan.device, plan.views
    batch_size, workers = batching(device, run.batch_size, run.workers)
    max_pixels, decode_on_device = run.max_pixels, plan.decode_on_device
    if decode_on_device is None:
        decode_on_device = preprocess.decoder == "gpu"
    if views is not None and decode_on_device:
        raise ValueError("augmented views are drawn from PIL images: use decoder=pil with views=")
    dataset = ImageRecords(records, preprocess.loader(max_pixels, defer_jpegs=decode_on_device), views)
    device_transform = preprocess.tensor_transform() if decode_on_device else None
    memory_format = torch.channels_last if run.channels_last else torch.contiguous_format
    cuda = device.type == "cuda"
    uint8_ring = cuda if plan.uint8_ring is None else plan.uint8_ring
    prefetch, ring = 4, None
    if workers and plan.fixed_size and views is None and not decode_on_device and (uint8_ring or not cuda):
        # The workers write into buffers this process owns (extract/batch_ring.py): normalised on
        # the CPU, uint8 for a device. Two batches ahead each are enough where they decode while
        # the network waits (four each measured slower: docs/benchmarks.md). On CUDA the encoder
        # holds two batches at once (one on the device while the previous one's codes come back).
        try:
            ring = BatchRing(2 * workers + (2 if cuda else 1), batch_size, preprocess.crop, memory_format,
                             torch.uint8 if uint8_ring else torch.float32)
        except RuntimeError:  # shared memory too small for it (a container's /dev/shm): batches as before
            ring = None
        if ring is not None:
            prefetch = 2
            dataset = RingBatches(dataset, ring, copy_into if uint8_ring else preprocess.image_normalizer())
    loader = DataLoader(dataset, batch_size=None if ring else batch_size, num_workers=workers,
                        collate_fn=as_is if ring else collate, pin_memory=cuda and ring is None,
                        prefetch_factor=prefetch if workers else None,
                        worker_init_fn=ExitWithParent(yield_cores=device.type == "cpu") if workers else None)
    model = model.to(device=device, memory_format=memory_format).eval()
    if run.compile:
        model = torch.compile(model)
    if plan.fixed_size or run.compile:  # a compiled graph also keeps one shape: no second compilation
        model = fixed_batch(model, batch_size, memory_format)
    autocast_dtype = PRECISIONS[plan.precision]
    # On a GPU the network's input is normalised there in its own precision (half the bytes the
    # first layer reads); on the CPU in float32, as autocast casts per operator.
    input_dtype = autocast_dtype if cuda and autocast_dtype is not None else torch.float32
    normalize = preprocess.normalizer(device, reuse_buffers=True, dtype=input_dtype)
    if cuda:
        settle_cudnn()
    stage = _Stage(device, ring, normalize, memory_format, model, autocast_dtype, plan, cuda)
    # On the CPU the activations' memory is kept between batches (extract/allocator.py), for the
    # workers forked below too.
    kept = freed_memory_kept() if device.type == "cpu" else contextlib.nullcontext()
    pinned = ring is not None and uint8_ring and cuda and ring.pin()
    try:
        with kept, torch.inference_mode():
            in_flight = None  # CUDA: the batch on the device while the next one is launched
            for batch in loader:
                if ring is None:
                    images = batch.images.to(device, non_blocking=True)
                    if batch.jpegs:
                        images = _decode_on_device(batch, images, device_transform, device, max_pixels)
                else:
                    images = None
                launched = stage.launch(batch, images)
                if not cuda:
                    yield stage.finish(launched)
                    continue
                if in_flight is not None:
                    yield stage.finish(in_flight)
                in_flight = launched
            if in_flight is not None:
                yield stage.finish(in_flight)
    finally:
        if pinned:
            torch.cuda.synchronize(device)
            ring.unpin()


def settle_cudnn():
    """The same convolution algorithms in every process, so two runs give bit-identical codes:
    cudnn.benchmark times candidates per process and may pick another one each time (a different
    summation order: codes differing in the last bits); cuDNN's heuristic picks by the shapes
    alone, and deterministic keeps to algorithms without atomics. bench/gpu/device_check.sh
    measures what it costs."""
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


class _Stage:
    """One batch on the device: its input (a ring slot copied on a stream of its own, or the
    loader's images), normalised there, the network, and the codes on their way back; finish()
    waits for them. On the CPU a launch is finished at once."""

    def __init__(self, device, ring, normalize, memory_format, model, autocast_dtype, plan, cuda):
        self.device, self.ring, self.normalize, self.memory_format = device, ring, normalize, memory_format
        self.model, self.autocast_dtype, self.plan, self.cuda = model, autocast_dtype, plan, cuda
        self.copy_stream = torch.cuda.Stream(device) if cuda and ring is not None else None

    def _input(self, batch, images, rows):
        ring = self.ring
        if ring is None:
            return self.normalize(images, self.memory_format)
        slot = ring.batch(batch.ring_number)
        if ring.dtype != torch.uint8:
            return slot  # normalised by the workers; its rows past the images zeros (as fixed_batch pads)
        if self.copy_stream is not None:
            with torch.cuda.stream(self.copy_stream):
                slot = slot.to(self.device, non_blocking=True)
            torch.cuda.current_stream(self.device).wait_stream(self.copy_stream)
            slot.record_stream(torch.cuda.current_stream(self.device))
        x = self.normalize(slot, self.memory_format)
        x[rows:].zero_()  # zeros past the images, as fixed_batch pads (uint8 zeros normalise to -mean/std)
        return x

    def launch(self, batch, images):
        codes, flipped, done = {}, None, None
        if batch.indices:
            rows = len(batch.indices)
            x = self._input(batch, images, rows)
            out_dtype = self.plan.codes_dtype or torch.float32
            with autocast_context(self.device, self.autocast_dtype):
                out = self.model(x)
                if self.plan.mirrored:
                    flipped = {k: v[:rows].to(out_dtype) for k, v in self.model(x.flip(-1)).items()}
            codes = {k: v[:rows].to(out_dtype) for k, v in out.items()}
            if self.cuda:
                codes = {k: v.to("cpu", non_blocking=True) for k, v in codes.items()}
                if flipped is not None:
                    flipped = {k: v.to("cpu", non_blocking=True) for k, v in flipped.items()}
                done = torch.cuda.Event()
                done.record()
        return batch, codes, flipped, done

    def finish(self, launched):
        batch, codes, flipped, done = launched
        if done is not None:
            done.synchronize()
        if codes and self.ring is not None:
            self.ring.check(batch.ring_number)
        codes = {k: v.numpy() for k, v in codes.items()}
        if flipped is not None:
            flipped = {k: v.numpy() for k, v in flipped.items()}
        return EncodedBatch(batch.indices, codes, batch.failed, batch.keys, batch.unchanged, batch.views, flipped,
                            batch.read_ns, batch.start, batch.count)


def fixed_batch(model, batch_size, memory_format=torch.contiguous_format):
    """``model`` ({layer: tensor} out) run on exactly ``batch_size`` rows at a time, whatever the
    number of rows given: full chunks, the last one padded with zeros (whose rows are dropped).
    Padding costs at most one batch's compute, once per short batch."""
    def forward(x):
        n = x.shape[0]
        parts = []
        for start in range(0, n, batch_size):
            chunk = x[start:start + batch_size]
            if chunk.shape[0] < batch_size:
                padding = chunk.new_zeros((batch_size - chunk.shape[0], *chunk.shape[1:]))
                chunk = torch.cat([chunk, padding])
            out = model(chunk.contiguous(memory_format=memory_format))
            parts.append({k: v[:min(batch_size, n - start)] for k, v in out.items()})
        if len(parts) == 1:
            return parts[0]
        return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
    return forward


def _decode_on_device(batch, images, transform, device, max_pixels):
    """Decode the batch's JPEGs on the device and merge them with its ready images, in record order.

    Updates batch.indices and batch.failed; returns the uint8 images [n, 3, crop, crop] on device.
    """
    done, failed = finish_batch(batch.jpegs, transform, device, max_pixels)
    done.update(zip(batch.indices, images))
    batch.indices = sorted(done)
    batch.failed = sorted(batch.failed + failed)
    if not done:
        return images
    return torch.stack([done[i] for i in batch.indices])


def autocast_context(device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
