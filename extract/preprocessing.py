"""The per-image transform that turns a PIL image into the network's uint8 input.

Normalisation (mean/std) is applied on the device, per batch: uint8 crosses process and device
boundaries at a quarter of the size of float32. On the CPU, where nothing crosses to a device, the
decoding workers normalise each image straight into the encoder's shared batch buffers
(extract/batch_ring.py), with the same arithmetic.
"""
from dataclasses import asdict, dataclass, replace

# torch and torchvision are imported inside the methods: the recipe itself is plain data, read by
# the backbone registry, which the command line loads for its help.

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side (or, squashed, both sides) to ``resize``, centre-crop ``crop``,
    scale to [0, 1], normalise."""
    resize: int = 256
    crop: int = 224
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    interpolation: str = "bilinear"
    # Let libjpeg decode big JPEGs at 1/2, 1/4 or 1/8 scale while the shorter side stays >= resize:
    # several times faster on photos far larger than the input, codes differ slightly.
    jpeg_draft: bool = False
    # "pil", "torchvision" (libjpeg-turbo in the workers) or "gpu" (nvJPEG on the device, the
    # workers only read bytes): extract/tensor_decoding.py. Pixels differ slightly between them.
    decoder: str = "pil"
    # Both sides to ``resize`` (the aspect ratio not kept), then the centre crop: the "squash" mode
    # of SigLIP's open_clip configs and some timm weights.
    squash: bool = False

    def with_crop(self, crop: int) -> "Preprocess":
        """The same recipe at another input size, keeping the resize/crop ratio."""
        return replace(self, crop=int(crop), resize=int(round(crop * self.resize / self.crop)))

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        """The recipe a cache's fingerprint recorded (JSON lists back to tuples)."""
        return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        # Defaults are left out, so caches made before these options still match.
        if not self.jpeg_draft:
            del d["jpeg_draft"]
        if self.decoder == "pil":
            del d["decoder"]
        if not self.squash:
            del d["squash"]
        return d

    @property
    def draft_size(self):
        """The size handed to the decoder's draft mode, or None for a full decode."""
        return self.resize if self.jpeg_draft else None

    def resizer(self):
        """The shorter side to ``resize`` (PIL image or tensor); the centre crop and the augmented
        views (extract/views.py) both start from its output."""
        from torchvision.transforms import InterpolationMode, v2
        size = (self.resize, self.resize) if self.squash else self.resize
        return v2.Resize(size, interpolation=InterpolationMode(self.interpolation), antialias=True)

    def pil_transform(self):
        """PIL image -> uint8 tensor [3, crop, crop] (runs in DataLoader workers)."""
        from torchvision.transforms import v2
        return v2.Compose([self.resizer(), v2.CenterCrop(self.crop), v2.PILToTensor()])

    def tensor_transform(self):
        """uint8 tensor [3, H, W] -> uint8 tensor [3, crop, crop], on whatever device it lives."""
        from torchvision.transforms import v2
        return v2.Compose([self.resizer(), v2.CenterCrop(self.crop)])

    def loader(self, max_pixels, defer_jpegs=False):
        """path -> network input (uint8 [3, crop, crop]), picklable for DataLoader workers.

        defer_jpegs (the gpu decoder): JPEGs come back undecoded, for the device.
        """
        from .dataset import PilLoader
        from .tensor_decoding import TensorLoader
        if self.decoder in ("torchvision", "gpu"):
            return TensorLoader(self.tensor_transform(), max_pixels, defer_jpegs)
        return PilLoader(self.pil_transform(), max_pixels, self.draft_size)

    def normalizer(self, device, reuse_buffers=False, dtype=None):
        """uint8 batch [B, 3, H, W] on device -> normalised float32 batch, laid out in the memory
        format asked for. reuse_buffers (the encoder's loop): the result lives in a buffer that the
        next batch of the same shape overwrites, since a fresh 19 MB tensor a batch paid its page
        faults again each time; without (a graph to export), a plain function of its input.
        dtype: the result in the network's input precision (float16 on a GPU), computed in float32
        and rounded once, so its values are the float32 batch's rounded to it."""
        import torch
        shift, scale = self._shift_and_scale(device)
        buffers = {}
        dtype = dtype or torch.float32

        def normalize(batch: torch.Tensor, memory_format=torch.contiguous_format) -> torch.Tensor:
            if not reuse_buffers:
                out = ((batch.float() - shift) / scale).contiguous(memory_format=memory_format)
                return out.to(dtype) if dtype != torch.float32 else out
            key = (tuple(batch.shape), memory_format)
            if key not in buffers:
                buffers.clear()
                buffers[key] = (torch.empty(batch.shape, device=device),
                                torch.empty(batch.shape, device=device, dtype=dtype)
                                .contiguous(memory_format=memory_format))
            plain, laid_out = buffers[key]
            # The same arithmetic, so the same values; laid out last: a uint8 batch laid out first
            # is slower (its transpose is not vectorised).
            torch.sub(batch, shift, out=plain).div_(scale)
            if memory_format == torch.contiguous_format and dtype == torch.float32:
                return plain
            return laid_out.copy_(plain)
        return normalize

    def _shift_and_scale(self, device):
        """255 * mean and 255 * std, [1, 3, 1, 1]: normalising is (pixel - shift) / scale."""
        import torch
        scale = torch.tensor(self.std, device=device).view(1, 3, 1, 1) * 255.0
        shift = torch.tensor(self.mean, device=device).view(1, 3, 1, 1) * 255.0
        return shift, scale

    def image_normalizer(self) -> "ImageNormalizer":
        """(uint8 image [3, H, W], float row [3, H, W] of any layout) -> the row holds the image
        normalised: the batch normaliser's arithmetic, so its values, one image at a time (the
        decoding workers write into the encoder's BatchRing, extract/batch_ring.py)."""
        import torch
        return ImageNormalizer(*self._shift_and_scale(torch.device("cpu")))


class ImageNormalizer:
    """Picklable (DataLoader workers): see Preprocess.image_normalizer.

    The per-channel shift and scale are spread over a whole image laid out as the row is (made
    once per layout): broadcast from [1, 3, 1, 1] over a channels-last row, the channel is the
    innermost dimension, 3 long, and the arithmetic runs element by element (270 us an image at
    224 px on one core, nearly a fifth of decoding's time); on same-laid-out operands it is one
    vectorised pass each (70 us, with PIL's images, which are channels-last underneath). The same
    subtraction and division of the same numbers: the same values."""

    def __init__(self, shift, scale):
        self.shift, self.scale = shift, scale
        self._spread = {}  # (shape, strides) -> (shift, scale) of that shape and layout

    def __getstate__(self):
        return {"shift": self.shift, "scale": self.scale, "_spread": {}}

    def __call__(self, image, row):
        import torch
        layout = (tuple(row.shape), row.stride())
        if layout not in self._spread:
            self._spread[layout] = tuple(torch.empty_strided(*layout).copy_(c[0].expand(row.shape))
                                         for c in (self.shift, self.scale))
        shift, scale = self._spread[layout]
        torch.sub(image, shift, out=row).div_(scale)
