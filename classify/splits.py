"""Which rows are reported, which choose hyper-parameters, which train the final model.

The reported split is `test` when the cache has one, else `val`; hyper-parameters are never
chosen on it. They are chosen on `val` when `val` is not reported, otherwise on a stratified,
seeded slice of train. The final model is refit on every row that is not reported.
"""
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import PredefinedSplit, StratifiedShuffleSplit

SELECTION_FRACTION = 0.2


class SplitError(ValueError):
    pass


@dataclass
class SplitPlan:
    eval_split: str
    eval_mask: np.ndarray       # rows reported
    fit_mask: np.ndarray        # rows the final model trains on (all not reported)
    selection_fold: np.ndarray  # over fit rows: 0 = chooses hyper-parameters, -1 = trains during the sweep
    selection: str              # how the choosing rows were picked, in words

    def predefined_split(self) -> PredefinedSplit:
        return PredefinedSplit(self.selection_fold)


def plan_splits(splits, labels, seed=0) -> SplitPlan:
    splits = np.asarray(splits).astype(str)
    present = set(splits.tolist())
    if "test" in present:
        eval_split = "test"
    elif "val" in present:
        eval_split = "val"
    else:
        raise SplitError("the cache has no val or test rows to report on; extract with a split layout "
                         "(root/{train,val,test}/<class>) or from a plain folder (splits derived automatically)")
    eval_mask = splits == eval_split
    fit_mask = ~eval_mask
    if not fit_mask.any():
        raise SplitError(f"the cache has only {eval_split} rows; nothing to train on")
    fit_splits = splits[fit_mask]
    fold = np.full(int(fit_mask.sum()), -1)
    if eval_split == "test" and "val" in present:
        fold[fit_splits == "val"] = 0
        selection = "val"
    else:
        fit_labels = np.asarray(labels)[fit_mask]
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=SELECTION_FRACTION, random_state=seed)
        try:
            _, chosen = next(splitter.split(np.zeros(len(fit_labels)), fit_labels))
        except ValueError:  # a class too small to stratify: fall back to a plain seeded slice
            rng = np.random.default_rng(seed)
            chosen = rng.permutation(len(fit_labels))[: max(1, int(SELECTION_FRACTION * len(fit_labels)))]
        fold[chosen] = 0
        selection = f"a stratified {int(SELECTION_FRACTION * 100)}% slice of train (seed {seed})"
    return SplitPlan(eval_split, eval_mask, fit_mask, fold, selection)
