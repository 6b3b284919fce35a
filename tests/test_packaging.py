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


def test_a_checkout_that_was_not_installed_imports_its_three_stages_and_nothing_else():
    """Without the install's mapping, cnncodes finds extract/, cache/ and classify/ beside it; the
    checkout's other folders (bench, tests, docs) are not cnncodes's sub-packages."""
    import subprocess
    import sys
    probe = (
        "import importlib, sys\n"
        f"sys.path = [{ROOT!r}] + [p for p in sys.path if p.rstrip('/') != {ROOT!r} and '__editable__' not in p]\n"
        "sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        "import cnncodes, cnncodes.extract.runner, cnncodes.classify.evaluate, cnncodes.cache\n"
        "assert cnncodes.extract.__file__.endswith('/extract/__init__.py'), cnncodes.extract.__file__\n"
        "for name in ('bench', 'tests', 'docs'):\n"
        "    try:\n"
        "        importlib.import_module('cnncodes.' + name)\n"
        "        raise SystemExit('cnncodes.' + name + ' imported')\n"
        "    except ModuleNotFoundError:\n"
        "        pass\n"
        "print(len(cnncodes.list_backbones('resnet1*')))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0 and int(out.stdout) >= 2, out.stdout + out.stderr
