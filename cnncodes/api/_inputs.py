"""What a notebook holds, as the files and sources the workflow reads: a pandas DataFrame or lists
of paths and labels become a manifest; PIL images and arrays become image files; one path stands
for a list of one. Checked here, where the input enters, so errors name the argument."""
import csv
import os

import numpy as np


def is_image(item) -> bool:
    """A PIL image, or an array shaped as one (H x W, H x W x 1/3/4)."""
    if hasattr(item, "convert") and hasattr(item, "save"):
        return True
    return isinstance(item, np.ndarray) and (item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (1, 3, 4)))


def as_list(items, what="images") -> list:
    """One path or image alone, or a sequence of them, as a list."""
    if isinstance(items, (str, os.PathLike)) or is_image(items):
        return [items]
    if hasattr(items, "to_numpy") and not hasattr(items, "columns"):  # a pandas Series
        items = items.to_numpy()
    try:
        return list(items)
    except TypeError:
        raise TypeError(f"{what}: give a path, an image, or a list of them, not {type(items).__name__}") from None


def images_as_files(images, folder) -> tuple:
    """(paths to read, how each is named to people): paths stay as given; each PIL image or array is
    written to ``folder`` as a lossless PNG, decoded later exactly as a file would be."""
    from PIL import Image
    paths, shown = [], []
    for i, image in enumerate(images):
        if is_image(image):
            if isinstance(image, np.ndarray):
                array = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
                if array.dtype != np.uint8:
                    raise TypeError(f"image {i}: an array of {array.dtype}; give uint8 pixels (0-255), H x W x 3")
                image = Image.fromarray(array)
            path = os.path.join(folder, f"image-{i}.png")
            image.save(path, format="PNG")
            paths.append(path)
            shown.append(f"image {i} (a {'PIL image' if hasattr(images[i], 'convert') else 'numpy array'})")
        elif isinstance(image, (str, os.PathLike)):
            paths.append(os.fspath(image))
            shown.append(os.fspath(image))
        else:
            raise TypeError(f"image {i}: a {type(image).__name__}; give a path, a PIL image or a uint8 array")
    return paths, shown


def is_table(data) -> bool:
    """Whether ``data`` is a table or list the caller holds rather than a source named by a path."""
    return not isinstance(data, (str, os.PathLike))


def write_manifest(data, labels, folder) -> str:
    """A manifest (path, label, split) in ``folder`` for a DataFrame with a ``path`` column (and
    optionally ``label`` and ``split``), or a list of paths with ``labels`` beside it (None: all
    unlabeled). Paths become absolute: they are the rows' names in the cache, as CodesTransformer
    names them."""
    if hasattr(data, "columns"):
        if labels is not None:
            raise TypeError("labels: a DataFrame brings its own label column; drop labels=")
        columns = [str(c) for c in data.columns]
        if "path" not in columns:
            raise TypeError(f"data: a DataFrame needs a 'path' column (and optionally 'label', 'split'); it has "
                            f"{', '.join(columns) or 'none'}; rename one, e.g. df.rename(columns={{'file': 'path'}})")
        paths = data["path"].tolist()
        labels = data["label"].tolist() if "label" in columns else None
        splits = data["split"].tolist() if "split" in columns else None
    else:
        paths, splits = as_list(data, "data"), None
        if not paths:
            raise ValueError("data: the list of paths is empty")
        if any(not isinstance(p, (str, os.PathLike)) for p in paths):
            bad = next(p for p in paths if not isinstance(p, (str, os.PathLike)))
            raise TypeError(f"data: a list of image paths, and it holds a {type(bad).__name__}")
        if labels is not None:
            labels = as_list(labels, "labels")
            if len(labels) != len(paths):
                raise ValueError(f"labels: {len(labels)} labels for {len(paths)} paths; give one per path "
                                 "(None or '' for an unlabeled one)")
    manifest = os.path.join(folder, "images.csv")
    with open(manifest, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path"] + (["label"] if labels is not None else []) + (["split"] if splits else []))
        for i, path in enumerate(paths):
            row = [os.path.abspath(os.fspath(path))]
            if labels is not None:
                row.append(_text(labels[i]))
            if splits:
                row.append(_text(splits[i]))
            writer.writerow(row)
    return manifest


def _text(value) -> str:
    """A cell: '' for None and NaN (pandas' missing value), else the value as text."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)
