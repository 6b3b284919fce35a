"""Our StandardScaler (classify/heads/standard_scaler.py: scikit-learn's, with a fit that reads the
codes in place) against scikit-learn's own: the same fitted attributes on the data it fits fast,
the same on what it hands back (NaN, weights, few rows), and scikit-learn's estimator checks.

The checks' skips are scikit-learn's own, as in test_estimator_checks.py: its array-API checks run
only with SCIPY_ARRAY_API=1 and the array libraries (array_api_strict, cupy, dpnp) installed."""
import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler as SklearnStandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from cnncodes.classify.heads import standard_scaler
from cnncodes.classify.heads.scaling import make_scaler, scaler_classes
from cnncodes.classify.heads.standard_scaler import StandardScaler


def _codes(rows=6000, width=300, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(rows, width)) * rng.uniform(0.01, 30, width) + rng.uniform(-1e4, 1e4, width)).astype(dtype)
    X[:, 7] = 3.25  # a constant feature: scikit-learn scales it by 1
    X[:, 8] = 0.0
    return X


def _same_fit(ours, theirs):
    assert type(ours).__name__ == "StandardScaler"  # what a model file names
    np.testing.assert_array_equal(ours.n_samples_seen_, theirs.n_samples_seen_)
    assert type(ours.n_samples_seen_) is type(theirs.n_samples_seen_)  # noqa: E721  (a model file records it)
    assert ours.n_features_in_ == theirs.n_features_in_
    np.testing.assert_allclose(ours.mean_, theirs.mean_, rtol=1e-12, atol=0)
    np.testing.assert_allclose(ours.var_, theirs.var_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.scale_, theirs.scale_, rtol=1e-9)
    assert ours.mean_.dtype == theirs.mean_.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_fast_fit_gives_scikit_learns_attributes_and_transform(dtype):
    X = _codes(dtype=dtype)
    assert len(X) >= standard_scaler.FAST_ROWS  # the fast path, not scikit-learn's own
    ours, theirs = StandardScaler().fit(X), SklearnStandardScaler().fit(X)
    _same_fit(ours, theirs)
    assert ours.scale_[7] == ours.scale_[8] == 1.0
    np.testing.assert_allclose(ours.transform(X), theirs.transform(X), rtol=1e-5, atol=1e-5)
    assert ours.transform(X).dtype == dtype


def test_a_read_only_memory_map_is_fitted_without_a_copy_of_its_rows(tmp_path):
    X = _codes()
    np.save(tmp_path / "x.npy", X)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    _same_fit(StandardScaler().fit(mapped), SklearnStandardScaler().fit(X))


@pytest.mark.parametrize("case", ["nan", "weights", "few rows", "without mean"])
def test_what_the_fast_fit_hands_to_scikit_learn_fits_as_scikit_learns(case):
    X = _codes()
    kwargs, make = {}, dict
    if case == "nan":
        X[3, 5] = np.nan  # ignored per feature by scikit-learn: n_samples_seen_ becomes per feature
    elif case == "weights":
        kwargs["sample_weight"] = np.random.default_rng(1).uniform(0.5, 2, len(X))
    elif case == "few rows":
        X = X[:standard_scaler.FAST_ROWS - 1]
    else:
        make = lambda: {"with_mean": False}  # noqa: E731
    ours = StandardScaler(**make()).fit(X, **kwargs)
    theirs = SklearnStandardScaler(**make()).fit(X, **kwargs)
    np.testing.assert_array_equal(ours.n_samples_seen_, theirs.n_samples_seen_)
    np.testing.assert_array_equal(ours.scale_, theirs.scale_)
    if case != "without mean":
        np.testing.assert_array_equal(ours.mean_, theirs.mean_)


def test_infinity_is_refused_as_scikit_learn_refuses_it():
    X = _codes()
    X[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        SklearnStandardScaler().fit(X)
    with pytest.raises(ValueError, match="infinity"):
        StandardScaler().fit(X)


def test_the_fast_fit_checks_its_parameters_as_scikit_learn_does():
    from sklearn.utils._param_validation import InvalidParameterError
    with pytest.raises(InvalidParameterError):
        SklearnStandardScaler(copy="x").fit(_codes())
    with pytest.raises(InvalidParameterError):
        StandardScaler(copy="x").fit(_codes())


def test_the_scaling_named_standard_is_ours_and_a_model_file_may_name_it():
    assert type(make_scaler("standard")) is StandardScaler
    assert StandardScaler in scaler_classes()


@pytest.fixture
def fast_fit_on_every_size(monkeypatch):
    monkeypatch.setattr(standard_scaler, "FAST_ROWS", 2)  # the checks' toy data is small


@parametrize_with_checks([StandardScaler()])
def test_scikit_learns_estimator_checks(estimator, check, fast_fit_on_every_size):
    check(estimator)
