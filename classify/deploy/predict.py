"""Classify new images with a saved model: the model's own extractor, then its head."""
import numpy as np

from ..model_file import read_model_file


def predict_images(model_path, inputs, top_k=3, weights_file=None, device="auto", batch_size=None, workers=None,
                   tta=False, precision=None):
    """(predictions, failures) with the model of a file (or a fitted model: what read_model_file gives, or
    cnncodes.Model). Each prediction: {path, label, probability, top_k: [{label, probability}]}.
    tta: average the head's probabilities over each image's centre view and its mirror image.
    precision: compute the codes in this float precision (default: the device's automatic one)."""
    from ...extract.by_fingerprint import encode_images  # the one door from stage two into stage one
    model = model_path if hasattr(model_path, "pipeline") else read_model_file(model_path)
    paths, codes, failures = encode_images(model.fingerprint, inputs, weights_file=weights_file, device=device,
                                           batch_size=batch_size, workers=workers, layer=model.layer, mirrored=tta,
                                           precision=precision)
    for part in model.side_by_side:  # each other backbone's codes, side by side as in training
        more_paths, more, more_failures = encode_images(part["fingerprint"], inputs, device=device,
                                                        batch_size=batch_size, workers=workers, layer=part["layer"],
                                                        mirrored=tta, precision=precision)
        at = {p: i for i, p in enumerate(more_paths)}
        keep = [i for i, p in enumerate(paths) if p in at]
        codes = np.concatenate([codes[keep], more[[at[paths[i]] for i in keep]]], axis=-1)
        paths = [paths[i] for i in keep]
        failed = {path for path, _ in failures}
        failures += [f for f in more_failures if f[0] not in failed]
    if not paths:
        return [], failures
    proba = (model.predict_proba(codes[:, 0]) + model.predict_proba(codes[:, 1])) / 2 if tta else \
        model.predict_proba(codes)
    labels = [model.class_names[int(c)] for c in model.classes]  # predict_proba's column order
    return [prediction(path, row, labels, top_k) for path, row in zip(paths, proba)], failures


def ranked(row, labels, k) -> list:
    """The ``k`` most probable columns of one probability row: [{label, probability}], ties in
    column order."""
    order = np.argsort(-row, kind="stable")[:max(1, min(k, len(row)))]
    return [{"label": labels[int(j)], "probability": float(row[j])} for j in order]


def prediction(path, row, labels, k) -> dict:
    """One image's answer: {path, label, probability, top_k}."""
    top = ranked(row, labels, k)
    return {"path": path, "label": top[0]["label"], "probability": top[0]["probability"], "top_k": top}
