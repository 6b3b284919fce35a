"""`extract`: every image through the backbone once, into the HDF5 cache."""
import os


def extract_codes(data, cache, *, labels=None, layer=None, progress=False, **options):
    """Run every image of ``data`` through the backbone once, into the HDF5 ``cache``; resumable
    and incremental, as `extract`. data: a folder, manifest, tar shards, Parquet file or URL prefix;
    or what a notebook holds: a pandas DataFrame with a ``path`` column (and ``label``, ``split``),
    or a list of paths with ``labels`` beside it (rows named by absolute path, as CodesTransformer
    names them, so the two share rows). A photo the cache holds under another path is found by its
    content and moved, never encoded twice.
    options: extract's, by name (backbone, weights, precision, batch_size, workers, views, ...);
    ``layer``: one name, "a,b", "a+b", or a sequence; None: the backbone's default layers (or,
    into an existing cache, its own). progress: a progress bar (a widget in Jupyter).
    A cache with a faiss index (`cnncodes index`) has it brought up to date after the run
    (ExtractSummary.indexed). Returns the ExtractSummary (.written, .skipped, .failed, .moved,
    .line(), .to_dict())."""
    import tempfile

    from ..extract import ExtractConfig
    from ..extract.config import layer_names
    from ._inputs import is_table, write_manifest
    if layer is not None:
        options["layers"] = layer_names(layer)
    if not is_table(data):
        if labels is not None:
            raise TypeError(f"labels: {os.fspath(data)} brings its own labels (class folders or a label column); "
                            "labels= goes with a list of paths")
        return extract_and_index(ExtractConfig(os.fspath(data), os.fspath(cache), progress=progress, **options))
    with tempfile.TemporaryDirectory(prefix="cnncodes-extract-") as folder:
        manifest = write_manifest(data, labels, folder)
        return extract_and_index(ExtractConfig(manifest, os.fspath(cache), progress=progress, **options))


def extract_and_index(config):
    """run_extract, then (when it changed the cache and was not interrupted) each faiss index the
    cache has brought up to date: the one path of `extract` and ``extract_codes``."""
    from ..extract import run_extract
    from .index import update_indexes
    summary = run_extract(config)
    changed = summary.written or summary.failed or summary.moved or summary.pruned or summary.relabelled \
        or summary.unchanged
    if changed and not summary.interrupted:
        summary.indexed = update_indexes(config.cache_path)
    return summary
