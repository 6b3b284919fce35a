"""The wheel holds every sub-package: pyproject lists them by hand (a mapped layout is not
discovered), so a new folder that is not listed would install without its modules."""
import os
import tomllib

from conftest import ROOT

FOLDERS = {"cnncodes": "cnncodes", "cnncodes.extract": "extract", "cnncodes.cache": "cache",
           "cnncodes.classify": "classify"}


def _packages_on_disk() -> set:
    found = set()
    for package, folder in FOLDERS.items():
        for dirpath, dirnames, names in os.walk(os.path.join(ROOT, folder)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            if "__init__.py" in names:
                rel = os.path.relpath(dirpath, os.path.join(ROOT, folder))
                found.add(package if rel == "." else ".".join([package, *rel.split(os.sep)]))
    return found


def test_pyproject_lists_every_sub_package_and_no_other():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    on_disk = _packages_on_disk()
    assert {"cnncodes.extract.sources", "cnncodes.classify.heads"} <= on_disk  # the walk saw sub-packages
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == set(), "pyproject.toml lists packages that have no folder"
