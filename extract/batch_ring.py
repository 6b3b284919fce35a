"""The CPU's batches, normalised by the workers into a ring of shared buffers the encoder owns.

When the network runs on the CPU, decoding and the network take turns on the same cores, so every
millisecond the main process spends outside the network is lost to both. A DataLoader batch
costs it a shared-memory handshake with the worker that made it (the storage's file descriptor is
fetched from that worker, which runs at the idle priority: waits of ~10 ms a batch), fresh pages
each time, and the uint8-to-float normalisation. Here the main process allocates ``slots`` float
batches once, in the network's memory format, in shared memory; the workers write each image's
normalised pixels straight into its row of the batch's slot and send back only the bookkeeping.
The main process runs the network on the slot as it is.

For a device (CUDA), the slots hold uint8 images instead (``dtype=torch.uint8``: a quarter of the
bytes), which the workers copy in as decoded, and the main process registers the ring with the
driver as pinned memory (``pin``): a slot goes to the device by DMA, on a stream of its own, and
is normalised and laid out there (extract/encoder.py). The same ring runs on the CPU (tests).

Batch ``number`` goes to slot ``number % slots``. The DataLoader hands out a new batch number only
when it returns one (``prefetch_factor * workers`` in flight at most), so while the encoder holds
batch n the workers may fill batches up to n + prefetch_factor * workers: that many slots plus one
are never written under the network. Every slot records which batch was last written into it; the
encoder checks, after the network, that it is still its batch, so a loader that ran further ahead
would be an error, never silently mixed codes.
"""
import torch
from torch.utils.data import Dataset

from .dataset import collate


class BatchRing:
    """``slots`` batches [batch_size, 3, crop, crop] of ``dtype`` (float32: normalised; uint8: as
    decoded) in shared memory, laid out in ``memory_format``, and the number of the batch last
    written into each."""

    def __init__(self, slots, batch_size, crop, memory_format=torch.contiguous_format, dtype=torch.float32):
        self.slots, self.batch_size, self.dtype = slots, batch_size, dtype
        self._pinned = None
        # Shared memory from the start (share_memory_ would copy a private tensor into it), before
        # the workers start: they inherit (or are sent) the same pages, touched first by them.
        itemsize = torch.empty(0, dtype=dtype).element_size()
        storage = torch.UntypedStorage._new_shared(itemsize * slots * batch_size * 3 * crop * crop)
        buffers = torch.empty(0, dtype=dtype).set_(storage)
        if memory_format == torch.channels_last:  # NHWC storage seen as NCHW: what .contiguous(channels_last) makes
            self.buffers = buffers.view(slots, batch_size, crop, crop, 3).permute(0, 1, 4, 2, 3)
        else:
            self.buffers = buffers.view(slots, batch_size, 3, crop, crop)
        self.written = torch.full((slots,), -1, dtype=torch.int64).share_memory_()

    def pin(self) -> bool:
        """Register the ring's pages with CUDA as pinned host memory (in this process), so a slot's
        copy to the device is a DMA that runs beside compute. False where CUDA is not there."""
        if self._pinned is not None or not torch.cuda.is_available():
            return self._pinned is not None
        storage = self.buffers.untyped_storage()
        try:
            code = torch.cuda.cudart().cudaHostRegister(storage.data_ptr(), storage.nbytes(), 0)
        except (AttributeError, RuntimeError):
            return False  # the copies stay correct from pageable memory, only slower
        if int(getattr(code, "value", code)) != 0:
            return False
        self._pinned = storage.data_ptr()
        return True

    def unpin(self) -> None:
        if self._pinned is not None:
            torch.cuda.cudart().cudaHostUnregister(self._pinned)
            self._pinned = None

    def slot(self, number) -> int:
        return number % self.slots

    def batch(self, number) -> torch.Tensor:
        """The network's input for batch ``number``: its slot, every row (short batches end in zeros)."""
        return self.buffers[self.slot(number)]

    def fill(self, number, images, normalize_into):
        """Write the uint8 images [3, H, W] of batch ``number`` (a worker) into its slot, through
        ``normalize_into(image, row)`` (``copy_into`` for a uint8 ring); the rows after them become
        zeros, as the encoder pads a short batch."""
        slot = self.slot(number)
        self.written[slot] = number
        rows = self.buffers[slot]
        for row, image in zip(rows, images):
            normalize_into(image, row)
        if len(images) < len(rows):
            rows[len(images):].zero_()

    def check(self, number):
        """Raise if a worker wrote another batch into ``number``'s slot while the encoder used it."""
        written = int(self.written[self.slot(number)])
        if written != number:
            raise RuntimeError(f"batch ring: slot {self.slot(number)} of batch {number} was overwritten by batch "
                               f"{written}; the DataLoader ran further ahead than {self.slots} slots allow")


class RingBatches(Dataset):
    """Item ``number``: the loader batch of records [number * the ring's batch size, ...) of
    ``records`` (an ImageRecords), its images normalised into ``ring``; the Batch carries
    ``number``, no images."""

    def __init__(self, records, ring, normalize_into):
        self.records, self.ring, self.normalize_into = records, ring, normalize_into
        self.batch_size = ring.batch_size

    def __len__(self):
        return -(-len(self.records) // self.batch_size)

    def __getitem__(self, number):
        start = number * self.batch_size
        items = [self.records[i] for i in range(start, min(start + self.batch_size, len(self.records)))]
        batch = collate(items, place=lambda images: self.ring.fill(number, images, self.normalize_into))
        batch.ring_number = number
        return batch


def copy_into(image, row):
    """A uint8 ring's ``normalize_into``: the image as decoded (PIL's pixels are channels-last
    underneath, as a channels-last row is: one plain copy)."""
    row.copy_(image)


def as_is(batch):
    """The loader's collate_fn for RingBatches: an item is already a batch (picklable, unlike a lambda)."""
    return batch
