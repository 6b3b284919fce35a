"""This process: one DataLoader over every pending record, so decoding never stalls between commits."""


class LocalEngine:
    name = "local"

    def compute_device(self, requested: str):
        return None  # this machine's own choice (extract/device.py)

    def prepare(self, extractor):
        """Build the network here, before the runner's loop clock starts (a build is not the loop's work)."""
        extractor.model

    def run(self, extractor, records):
        """EncodedBatch for each consecutive batch of ``records``, positions in ``records``."""
        return extractor.encode(records, stored=True)
