"""The cache file a publish writes maps its virtual datasets as h5py's VirtualLayout slicing mapped them (issue 50).

publish_manifest (cache/_manifest.py) sets each range's mapping on the layout directly instead of
slicing h5py.VirtualSource objects (which deep-copies the source for every range): the cache file is
byte for byte the one the slicing wrote, and reads back the same rows.
"""
import os
import time

import h5py
import numpy as np
import pytest

from cnncodes.cache import _manifest
from cnncodes.cache._manifest import Manifest, missing_row_fill, publish_manifest
from cnncodes.cache.fingerprint import Fingerprint


def h5py_virtual(out, name, dtype, tail, manifest, folder):
    """_virtual before the cut: h5py's VirtualSource slices."""
    n = manifest.n_rows
    if n == 0:
        out.create_dataset(name, shape=(0,) + tail, dtype=dtype, maxshape=(None,) + tail)
        return
    layout = h5py.VirtualLayout(shape=(n,) + tail, dtype=dtype)
    layout.dcpl.set_obj_track_times(False)  # as publish sets it (below): no clock in the bytes compared
    offset, sources = 0, {}
    for seg, start, stop in manifest.ranges:
        if seg not in sources:
            sources[seg] = h5py.VirtualSource(f"{folder}/{seg}", name, shape=(manifest.segments[seg],) + tail,
                                              dtype=dtype)
        layout[offset:offset + stop - start] = sources[seg][start:stop]
        offset += stop - start
    fill = missing_row_fill(name, folder)
    if fill is not None:
        layout.dcpl.set_fill_value(np.array([fill], dtype=dtype))
    out.create_virtual_dataset(name, layout)


def _a_manifest(views, ranges, failures):
    recipe = {"count": 2, "scale": [0.5, 1.0], "ratio": [0.75, 1.3333], "seed": 0} if views else None
    fp = Fingerprint(backbone="toy", layers=("a", "b"), weights="random:0", preprocess={"crop": 8}, dtype="float16",
                     views=recipe, provenance={"data_root": "/photos"})
    attrs = dict(fp.to_attrs(), schema_version=2, linked_through=7, next_seq=9, widths={"a": 6, "b": 4096},
                 created="2026-12-06T00:00:00")
    segments = {"seg-00000001.h5": 1024, "seg-00000004.h5": 512, "seg-00000007.h5": 300}
    return Manifest(attrs, ["ant", "bee", "é"], segments, ranges,
                    {f"broken/{i}.jpg": ("%064x" % i, "cannot identify image", (i, 2, 3)) for i in range(failures)},
                    {name: "%064x" % i for i, name in enumerate(segments)})


CASES = {
    "whole segments": [["seg-00000001.h5", 0, 1024], ["seg-00000004.h5", 0, 512], ["seg-00000007.h5", 0, 300]],
    "holes": [["seg-00000001.h5", 0, 100], ["seg-00000001.h5", 101, 1024], ["seg-00000004.h5", 3, 500],
              ["seg-00000007.h5", 0, 1], ["seg-00000001.h5", 100, 101]],
    "no rows": [],
}


@pytest.mark.parametrize("views", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_the_cache_file_is_the_one_virtual_sources_wrote(tmp_path, monkeypatch, case, views):
    monkeypatch.setattr(time, "strftime", lambda *a: "2026-12-06T12:00:00+0000")
    files = {}
    for way in ("h5py", "direct"):
        os.makedirs(tmp_path / way / "c.h5.shards")
        if way == "h5py":
            monkeypatch.setattr(_manifest, "_virtual", h5py_virtual)
        else:
            monkeypatch.undo()
            monkeypatch.setattr(time, "strftime", lambda *a: "2026-12-06T12:00:00+0000")
        publish_manifest(str(tmp_path / way / "c.h5"), _a_manifest(views, CASES[case], 3 if views else 0))
        files[way] = (tmp_path / way / "c.h5").read_bytes()
    assert files["direct"] == files["h5py"]


def test_a_publish_of_the_same_manifest_writes_the_same_bytes_a_second_later(tmp_path, monkeypatch):
    """HDF5 stores the time in a virtual dataset's header unless told not to: two publishes of one
    manifest in different seconds wrote different bytes (and made the test above fail whenever its
    two publishes fell on either side of a second)."""
    monkeypatch.setattr(time, "strftime", lambda *a: "2026-12-06T12:00:00+0000")
    files = []
    for way in ("first", "second"):
        os.makedirs(tmp_path / way / "c.h5.shards")
        publish_manifest(str(tmp_path / way / "c.h5"), _a_manifest(True, CASES["holes"], 3))
        files.append((tmp_path / way / "c.h5").read_bytes())
        time.sleep(1.05 - time.time() % 1)  # into the next second
    assert files[0] == files[1]
