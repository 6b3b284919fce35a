"""The `ensemble` classifier: scikit-learn's soft-voting VotingClassifier over several heads.

Each member is the estimator the registry builds for it alone (its own sweep on the selection
rows, its own refit), so the ensemble chooses nothing on the reported rows. A member fitted
already on the same rows (by `compare`, just before) joins as a FrozenEstimator instead of being
fitted again. Members: the heads that model class probabilities and have a swept
hyper-parameter; knn (vote fractions, not probabilities) and the unswept centroid and seed recipe
stay out. On flowers5 the mean of the five beat each of them (docs/benchmarks.md, "Accuracy levers").
"""
import numpy as np

MEMBERS = ("logreg", "linear", "svm", "ridge", "mlp")


def final_model(estimator):
    """What a fitted member or search predicts with: GridSearchCV's (or a streamed sweep's)
    best_estimator_, a frozen member's own model, else the estimator itself."""
    from sklearn.frozen import FrozenEstimator
    if isinstance(estimator, FrozenEstimator):
        return estimator.estimator
    return getattr(estimator, "best_estimator_", estimator)


def voting(estimators: list):
    """An unfitted soft vote of (name, estimator) pairs; a fitted estimator given as ("name", model,
    True) joins frozen."""
    from sklearn.ensemble import VotingClassifier
    from sklearn.frozen import FrozenEstimator
    return VotingClassifier([(name, FrozenEstimator(est) if frozen else est) for name, est, frozen in estimators],
                            voting="soft")


def soft_vote(members: list, classes):
    """Fitted member pipelines [(name, pipeline)] as one fitted soft vote over ``classes``, fitting
    nothing again (a model file's ensemble, or a fitted vote reduced to its members' models)."""
    widths = {len(np.asarray(model.classes_)) for _, model in members}
    if widths != {len(classes)}:
        raise ValueError("ensemble members were fitted on different classes")
    n_features = getattr(members[0][1], "n_features_in_", 1)
    vote = voting([(name, model, True) for name, model in members])
    return vote.fit(np.zeros((len(classes), n_features), dtype=np.float32), np.asarray(classes))


def members_of(vote) -> list:
    """[(name, the model it predicts with)] of a fitted vote."""
    return [(name, final_model(member)) for name, member in vote.named_estimators_.items()]
