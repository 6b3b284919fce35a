"""This process: one DataLoader over every pending record, so decoding never stalls between commits."""


class LocalEngine:
    name = "local"

    def compute_device(self, requested: str):
        return None  # this machine's own choice (extract/device.py)

    def run(self, extractor, records):
        """EncodedBatch for each consecutive batch of ``records``, positions in ``records``."""
        return extractor.encode(records)
