"""Stage two's error type, importable without scikit-learn or torch (the command line catches it).

A ClassifyError says what cannot be done with these codes or options and how to fix it; it is a
ValueError, as scikit-learn's own refusals are. Any other exception is a bug and keeps its traceback.
"""


class ClassifyError(ValueError):
    """Stage two cannot do what was asked (an option, the rows a cache holds, a model file)."""
