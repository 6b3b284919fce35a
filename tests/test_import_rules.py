"""The rooms' import rules, read from the source (as import-linter's contracts would): the clean
graph stays clean by test, not by care.

- cache/ (the format, the contract between the stages) imports neither stage;
- the heads and the fit/compare workflow never import audit/ or deploy/;
- the torch-free deploy modules (ONNX predict, serve) never reach torch, at import or in a call;
- the sources (extract/sources/) name images and read their bytes, and import no network code;
- every relative import names a module that exists (a moved module's lazy imports included);
- a package's private parts (``_`` modules, ``_`` names) are its own: no other package imports
  them, neither a sub-package its parent's (cnncodes.api, cnncodes._openmp) nor a parent its
  sub-package's.
"""
import ast
import os

from conftest import ROOT

FOLDERS = {"cnncodes": "cnncodes", "cnncodes.extract": "extract", "cnncodes.cache": "cache",
           "cnncodes.classify": "classify"}


def _modules() -> dict:
    """module name -> (path, is a package's __init__)."""
    found = {}
    for package, folder in FOLDERS.items():
        for dirpath, _, names in os.walk(os.path.join(ROOT, folder)):
            for name in names:
                if not name.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), os.path.join(ROOT, folder))
                parts = rel[:-3].split(os.sep)
                is_init = parts[-1] == "__init__"
                parts = parts[:-1] if is_init else parts
                found[".".join([package, *parts]) if parts else package] = (os.path.join(dirpath, name), is_init)
    return found


MODULES = _modules()


def imports_of(module, module_level_only=False) -> set:
    """Absolute names ``module`` imports (relative imports resolved; ``from x import y`` gives x.y
    where that is a module of ours, else x)."""
    path, is_init = MODULES[module]
    tree = ast.parse(open(path).read())
    package = module if is_init else module.rsplit(".", 1)[0]
    nodes = tree.body if module_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES}
    return out


def _in(name, room) -> bool:
    return name == room or name.startswith(room + ".")


def test_the_cache_imports_no_stage():
    for module in MODULES:
        if _in(module, "cnncodes.cache"):
            bad = {n for n in imports_of(module) if _in(n, "cnncodes.extract") or _in(n, "cnncodes.classify")}
            assert not bad, f"{module} imports {bad}"


def test_heads_and_the_workflow_never_import_audit_or_deploy():
    rooms = ("cnncodes.classify.audit", "cnncodes.classify.deploy")
    checked = 0
    for module in MODULES:
        if _in(module, "cnncodes.classify") and not any(_in(module, room) for room in rooms):
            bad = {n for n in imports_of(module) if any(_in(n, room) for room in rooms)}
            assert not bad, f"{module} imports {bad}"
            checked += 1
    assert checked >= 15  # the heads and the workflow modules were all read


def test_the_torch_free_deploy_modules_never_reach_torch():
    """Everything onnx_predict and serve import (in any function), and everything those modules
    import when loaded, transitively: no torch, no torchvision."""
    for start in ("cnncodes.classify.deploy.onnx_predict", "cnncodes.classify.deploy.serve"):
        seen, todo = set(), [(name, start) for name in imports_of(start)]
        while todo:
            name, via = todo.pop()
            assert not (_in(name, "torch") or _in(name, "torchvision")), f"{start} reaches {name} through {via}"
            if name in seen:
                continue
            seen.add(name)
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                prefix = ".".join(parts[:i])
                if prefix in MODULES and prefix not in seen | {name}:
                    todo.append((prefix, via))
            if name in MODULES:
                todo += [(n, name) for n in imports_of(name, module_level_only=True)]
        assert any(_in(n, "cnncodes") for n in seen), start  # the walk really followed our modules


def test_the_sources_import_no_network_code():
    checked = 0
    for module in MODULES:
        if _in(module, "cnncodes.extract.sources"):
            bad = {n for n in imports_of(module) if _in(n, "torch") or _in(n, "torchvision")
                   or _in(n, "cnncodes.extract.backbones") or _in(n, "cnncodes.classify")}
            assert not bad, f"{module} imports {bad}"
            checked += 1
    assert checked >= 5  # folder, manifests, tar shards, object storage, records


def test_every_relative_import_names_a_module_that_exists():
    """Function-level imports only fail when called: this catches the ones a move left behind."""
    for module, (path, is_init) in MODULES.items():
        package = module if is_init else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")
                base = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
                assert base in MODULES, f"{path}:{node.lineno} imports {base}, which does not exist"


def _imported_names(module):
    """(line, absolute dotted name) of everything ``module`` imports, in any function: ``from x
    import y`` gives x.y, whether y is a module or a name (relative imports resolved)."""
    path, is_init = MODULES[module]
    package = module if is_init else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)


def _private_owner(name):
    """The package whose private part ``name`` reaches (a ``_`` module of it, or a ``_`` name of
    one of its modules), or None where every part of it is public (or it is not ours)."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        if parts[i].startswith("_") and not parts[i].startswith("__"):
            holder = ".".join(parts[:i])
            if holder not in MODULES:
                return None  # another library's, or a name inside a name
            return holder if MODULES[holder][1] else holder.rsplit(".", 1)[0]
    return None


def _package_of(module):
    return module if MODULES[module][1] else module.rsplit(".", 1)[0]


def test_no_module_imports_another_packages_private_parts():
    """A ``_`` module, or a ``_`` name of a module, is its package's own: no other package imports
    it, a sub-package (cnncodes.api, cnncodes.extract.backbones) not its parent's, a parent not its
    sub-package's (as sklearn's ``_`` modules and timm's ``_registry`` are reached through their
    package's public names). Within one package, ``_`` modules are shared freely."""
    leaks = []
    for module, (path, _) in MODULES.items():
        for line, name in _imported_names(module):
            owner = _private_owner(name)
            if owner is not None and owner != _package_of(module):
                leaks.append(f"{os.path.relpath(path, ROOT)}:{line} imports {name}, private to {owner}")
    assert not leaks, "; ".join(leaks)


def test_the_private_parts_rule_sees_the_leaks_it_forbids():
    """The rule's reading, on names like the ones it was written for."""
    assert _private_owner("cnncodes.cache._files.file_sha256") == "cnncodes.cache"        # another room's _ module
    assert _private_owner("cnncodes.extract.extractor._weights_for") == "cnncodes.extract"  # a parent's _ name
    assert _private_owner("cnncodes._openmp") == "cnncodes"                                # cnncodes.api's parent's
    assert _private_owner("cnncodes.extract.weights.weights_for_identity") is None
    assert _private_owner("torch._dynamo") is None and _private_owner("cnncodes.__version__") is None
