"""Which rows are reported, which choose hyper-parameters, which train the final model.

The reported split is `test` when the cache has one, else `val`; hyper-parameters are never
chosen on it. They are chosen on `val` when `val` is not reported, otherwise on a stratified,
seeded slice of train. The final model is refit on every row that is not reported.

Augmented views (extract --views) are rows of a train image after its centre row. They train;
they are never scored: the reported split and the selection rows are centre views, one row per
photo, and the selection slice is drawn by image, so no image has rows on both sides of it (the
views of a selection image sit the sweep out; they join the final refit).
"""
from dataclasses import dataclass

import numpy as np

from ..cache.schema import image_of_rows

from .errors import ClassifyError

SELECTION_FRACTION = 0.2
# A fit row's part in the sweep (SplitPlan.selection_fold): GridSearchCV's one test fold, its
# training rows, or neither (an augmented view of a selection image: it joins the final refit only).
SELECTS, SWEEP_TRAINS, SITS_OUT = 0, -1, -2
# The splits stage two gives rows it leaves out, neither reported nor trained on: an unlabeled row
# (load_codes), and a row dropped by --exclude (exclude_rows).
UNLABELED_SPLIT = "unlabeled"
EXCLUDED_SPLIT = "excluded"
LEFT_OUT = (UNLABELED_SPLIT, EXCLUDED_SPLIT)


def reported_split(splits) -> str:
    """test when the rows have a test split, else val (None: neither)."""
    present = set(np.asarray(splits).astype(str).tolist())
    return "test" if "test" in present else "val" if "val" in present else None


class SplitError(ClassifyError):
    pass


@dataclass
class SplitPlan:
    eval_split: str
    eval_mask: np.ndarray       # rows reported (centre views)
    fit_mask: np.ndarray        # rows the final model trains on (all not reported)
    selection_fold: np.ndarray  # over fit rows: SELECTS, SWEEP_TRAINS or SITS_OUT
    selection: str              # how the choosing rows were picked, in words

    def sweep_split(self) -> list:
        """The one (train, test) index pair over fit rows, as GridSearchCV's ``cv`` takes it."""
        return [(np.flatnonzero(self.selection_fold == SWEEP_TRAINS), np.flatnonzero(self.selection_fold == SELECTS))]


def plan_splits(splits, labels, seed=0, views=None) -> SplitPlan:
    """views: each row's view index (0: centre view; None: every row is one)."""
    splits = np.asarray(splits).astype(str)
    views = np.zeros(len(splits), dtype=np.uint8) if views is None else np.asarray(views)
    centre = views == 0
    image = image_of_rows(views)
    labelled = ~np.isin(splits, LEFT_OUT)
    if not (splits != UNLABELED_SPLIT).any():
        raise SplitError("the cache has no labelled rows: fit and compare need labels (class folders, or a "
                         "manifest's label column); unlabeled rows serve predict-side and audit uses")
    classes = np.unique(np.asarray(labels)[labelled])
    if len(classes) < 2:
        raise SplitError(f"all {int(labelled.sum()):,} labelled rows are of one class: a classifier needs two or more "
                         "(label photos of another class)")
    present = set(splits[labelled].tolist())
    eval_split = reported_split(splits[labelled])
    if eval_split is None:
        raise SplitError("the cache has no val or test rows to report on; extract with a split layout "
                         "(root/{train,val,test}/<class>) or from a plain folder (splits derived automatically)")
    eval_mask = (splits == eval_split) & centre
    fit_mask = (splits != eval_split) & labelled
    if not fit_mask.any():
        raise SplitError(f"the cache has only {eval_split} rows; nothing to train on")
    fit_splits = splits[fit_mask]
    fold = np.full(int(fit_mask.sum()), SWEEP_TRAINS)
    fit_centre = centre[fit_mask]
    if eval_split == "test" and "val" in present:
        fold[(fit_splits == "val") & fit_centre] = SELECTS
        fold[(fit_splits == "val") & ~fit_centre] = SITS_OUT
        selection = "val"
    else:
        # Drawn over images (their centre rows), so the slice and its counts do not depend on views.
        candidates = np.flatnonzero(fit_centre)
        fit_labels = np.asarray(labels)[fit_mask][candidates]
        from sklearn.model_selection import StratifiedShuffleSplit  # here: reading a cache's splits needs no scikit-learn
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=SELECTION_FRACTION, random_state=seed)
        try:
            _, chosen = next(splitter.split(np.zeros(len(fit_labels)), fit_labels))
        except ValueError:  # a class too small to stratify: fall back to a plain seeded slice
            rng = np.random.default_rng(seed)
            chosen = rng.permutation(len(fit_labels))[: max(1, int(SELECTION_FRACTION * len(fit_labels)))]
        held_out = np.isin(image[fit_mask], image[fit_mask][candidates[chosen]])
        fold[held_out] = SITS_OUT
        fold[candidates[chosen]] = SELECTS
        selection = f"a stratified {int(SELECTION_FRACTION * 100)}% slice of train (seed {seed})"
    return SplitPlan(eval_split, eval_mask, fit_mask, fold, selection)
