"""`fit`: one classifier on the cached codes, hyper-parameters chosen without the reported rows
(or fixed by name), measured on the reported split; returns the Model."""
import os

from .codes import LOAD_OPTIONS, codes_from


def fit(codes, classifier="logreg", *, scaling=None, seed=0, **options):
    """Fit ``classifier`` (a name of `cnncodes fit --classifier`) on the codes (a CodesData, or a
    cache path loaded with load_codes's options: layer, max_memory, with_caches, exclude,
    exclude_reported). Hyper-parameters are chosen without the reported rows, except those given
    by name, which are fixed: ``fit(codes, "logreg", C=1.0)`` trains at C=1.0 and says so
    (``result.fixed``, ``result.selection``); a name the classifier does not take is refused.
    Returns a Model: .result (accuracy with its interval, params, sweep), .predict(X),
    .predict_images(paths), .save(path), .export_onnx(path), .to_dict() (`fit --json`)."""
    from ..classify import DEFAULT_SCALING, fit_and_evaluate
    from ..classify.model_file import model_meta
    from .model import Model
    load_options = {k: options.pop(k) for k in LOAD_OPTIONS if k in options}
    check_hyper_parameters(classifier, options)
    data = codes_from(codes, seed=seed, **load_options)
    result, pipeline = fit_and_evaluate(data, classifier, scaling or DEFAULT_SCALING, seed, params=options)
    return Model(pipeline, model_meta(classifier, result, data), result)


def check_hyper_parameters(classifier, params):
    """Refuse, before any loading, a name that is neither a load option nor the classifier's."""
    from ..classify.registry import did_you_mean, get_classifier
    spec = get_classifier(classifier)
    tunable = spec.tunable()
    for name in params:
        if name not in tunable:
            raise TypeError(f"{classifier} has no hyper-parameter or load option {name!r}"
                            f"{did_you_mean(name, tunable + list(LOAD_OPTIONS) + ['classifier', 'scaling', 'seed'])}; "
                            "hyper-parameters: "
                            f"{', '.join(tunable) or 'none'}; load options: {', '.join(LOAD_OPTIONS)}")
    spec.with_params(params)


def load_model(path):
    """A Model from a file `fit --model` (or Model.save) wrote."""
    from ..classify.model_file import read_model_file
    from .model import Model
    return Model.from_loaded(read_model_file(os.fspath(path)), os.fspath(path))
