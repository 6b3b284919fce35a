"""`load_codes`: a cache's codes for stage two, with what the command line's loading options do
(codes side by side, exclusions, the memory budget), and the notes that say what loading decided."""
import os

LOAD_OPTIONS = ("layer", "max_memory", "with_caches", "exclude", "exclude_reported")


def load_codes(cache, layer=None, *, max_memory=None, seed=0, with_caches=None, exclude=None,
               exclude_reported=False):
    """A cache's labelled codes for stage two (a CodesData: .X .y .splits .paths .class_names .layer
    .fingerprint); the rows without a label are set apart in ``.unlabeled`` (a CodesData whose ``y``
    is -1, scikit-learn's mark of an unlabeled sample), so ``X`` and ``y`` train as they are.

    layer: one code layer, "a,b" or "a+b" side by side; None: every code layer the cache holds.
    max_memory: "8G", "512M" or bytes (default: a share of this machine's memory); past it the
    codes stream, or a seeded subsample of ``seed`` is held. with_caches: other caches of the same
    photos whose codes go side by side. exclude: an audit.json (or a list of paths, one per line)
    whose rows leave training and selection, and the reported split too with ``exclude_reported``.
    What the loading decided is in ``.notes`` (the command line prints them)."""
    return load_every_row(cache, layer, max_memory=max_memory, seed=seed, with_caches=with_caches,
                          exclude=exclude, exclude_reported=exclude_reported).labelled()


def load_every_row(cache, layer=None, *, max_memory=None, seed=0, with_caches=None, exclude=None,
                   exclude_reported=False, stored=False):
    """load_codes with the unlabeled rows in place (split "unlabeled"): what audit and select
    read, since an unlabeled photo can still be a duplicate or a pick. stored: the codes as the
    cache stores them (read_codes)."""
    from ..classify import read_codes
    from ..classify.budget import memory_budget, over_budget_note
    budget = memory_budget(max_memory)
    data = read_codes(os.fspath(cache), layer, budget, seed, stored=stored)
    notes = []
    if with_caches:
        from ..classify.joined import join_caches
        data = join_caches(data, [os.fspath(c) for c in with_caches])
        notes.append(f"side by side: {data.path} ({data.layer}) + " + " + ".join(
            f"{part['cache']} ({part['layer']}, {part['fingerprint'].backbone})" for part in data.side_by_side)
            + f": {data.X.shape[1]}-d codes")
    if data.stream is not None:
        notes.append(over_budget_note(data, budget))
    if data.n_unlabeled:
        notes.append(f"note: {data.n_unlabeled:,} unlabeled rows left out (fit and compare use the "
                     f"{len(data) - data.n_unlabeled:,} labelled ones)")
    if exclude:
        from ..classify.data import exclude_rows, read_exclusions
        paths = read_exclusions(os.fspath(exclude))
        data = exclude_rows(data, paths, reported=exclude_reported)
        where = "training, selection and the reported split" if exclude_reported else \
            "training and selection (the reported split keeps them; exclude_reported=True drops them there too)"
        notes.append(f"note: exclude={exclude}: {data.excluded:,} rows of {len(paths):,} listed paths left out of "
                     f"{where}")
    data.notes = notes
    return data


def codes_from(codes, **load_options):
    """A CodesData as given, or loaded from a cache path with ``load_options``."""
    if isinstance(codes, (str, os.PathLike)):
        return load_codes(codes, **load_options)
    given = [name for name in LOAD_OPTIONS if load_options.get(name) is not None and load_options.get(name) is not False]
    if given:
        raise TypeError(f"{given[0]}= applies when codes is a cache path; pass it to load_codes(path, {given[0]}=...)")
    if not hasattr(codes, "class_names"):
        raise TypeError(f"codes: give a cache path or what load_codes returns, not {type(codes).__name__}")
    return codes
