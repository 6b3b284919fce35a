"""scikit-learn's own estimator test suite, run on every estimator of ours: every public class of
ours that claims to be a classifier passes it, less the failures declared below with their reasons.

The skips come from scikit-learn itself: its array-API checks run only with SCIPY_ARRAY_API=1 set,
and its decision_function checks skip k-nearest neighbours (which has none).
"""
import importlib
import inspect
import pkgutil

from sklearn.base import ClassifierMixin
from sklearn.utils.estimator_checks import parametrize_with_checks

import cnncodes.classify.heads
from cnncodes.classify.registry import CLASSIFIERS

WEAK_BY_DESIGN = ("the classic exercise's recipe (2 epochs of SGD at lr 0.001, unscaled) is deliberately weak: it "
                  "does not reach the 83% this check asks on its toy problem")

FIXED_INPUT = ("trains the backbone's own layers above one map of a fixed shape (here efficientnet_lite0's "
               "stage7_map as 320x1x1): the check's toy X of 1-10 features is not that map, and is refused with a "
               "ValueError naming the shape it takes")
NETWORK_TOP_TOY_DATA_CHECKS = (
    "check_fit_score_takes_y", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
    "check_estimators_fit_returns_self", "check_readonly_memmap_input", "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit", "check_estimators_dtypes", "check_dtype_object", "check_pipeline_consistency",
    "check_estimators_nan_inf", "check_estimators_pickle", "check_f_contiguous_array_estimator",
    "check_classifier_data_not_an_array", "check_classifiers_classes", "check_classifiers_train",
    "check_supervised_y_2d", "check_decision_proba_consistency", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_fit2d_1sample", "check_fit2d_1feature", "check_classifiers_one_label", "check_dict_unchanged",
    "check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in", "check_fit2d_predict1d")

# Every registered head, in each configuration its registry entry names for these checks.
ESTIMATORS = [spec.estimator_class()(**params) for spec in CLASSIFIERS.values() if spec.head
              for params in spec.check_params]

EXPECTED_FAILURES = {
    "SeedRecipeClassifier": {"check_classifiers_train": WEAK_BY_DESIGN},
    "SoftmaxLinearSVC": {
        "check_sample_weight_equivalence_on_dense_data": "liblinear's LinearSVC itself: sample weights are not "
                                                         "equivalent to repeated rows",
        "check_sample_weight_equivalence_on_sparse_data": "the same, on sparse data"},
    "NetworkTopClassifier": dict.fromkeys(NETWORK_TOP_TOY_DATA_CHECKS, FIXED_INPUT),
    "SoftmaxRidgeClassifier": {"check_non_transformer_estimators_n_iter": "RidgeClassifier's direct solvers report "
                                                                          "no iteration count (n_iter_ is None)"},
}


def test_every_public_classifier_of_ours_is_checked():
    """Registered or not: a public class in classify/heads/ that claims scikit-learn's classifier
    contract is in the checks (StreamedSweep, a search over a stream, claims none)."""
    checked = {type(e) for e in ESTIMATORS}
    claims = set()
    for info in pkgutil.iter_modules(cnncodes.classify.heads.__path__):
        module = importlib.import_module(f"cnncodes.classify.heads.{info.name}")
        claims |= {cls for name, cls in inspect.getmembers(module, inspect.isclass)
                   if cls.__module__ == module.__name__ and not name.startswith("_")
                   and issubclass(cls, ClassifierMixin) and hasattr(cls, "fit")}  # a base without fit is no estimator
    assert len(claims) >= 8 and claims - checked == set(), f"unchecked classifiers: {claims - checked}"
    assert all(spec.estimator_class() in checked for spec in CLASSIFIERS.values() if spec.head)


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILURES.get(type(est).__name__, {}))
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_the_fixed_shape_and_the_stream_are_plain_errors():
    import numpy as np
    import pytest
    from cnncodes.classify.heads.network_top import NetworkTopClassifier
    from cnncodes.classify.heads.sweep import LogisticSweepCV, StreamedSweep
    top = NetworkTopClassifier("efficientnet_lite0", "random:0", "stage7_map", (320, 1, 1), epochs=1, device="cpu")
    X, y = np.random.default_rng(0).normal(size=(8, 320)), np.arange(8) % 2
    assert top.fit(X, y).predict(X).shape == (8,)  # the shape it takes trains
    with pytest.raises(ValueError, match=r"X has 3 features, .* shape \(320, 1, 1\)"):
        top.fit(X[:, :3], y)
    with pytest.raises(ValueError, match="X has 3 features"):
        top.predict(X[:, :3])
    with pytest.raises(TypeError, match="StreamedSweep fits StreamedRows"):
        StreamedSweep(LogisticSweepCV()).fit(X, y)
