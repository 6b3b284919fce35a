"""docs/python.md's code blocks run, in order, in one namespace: the Python docs cannot drift."""
import os
import re

from conftest import ROOT


def test_every_python_block_of_the_python_docs_runs(tmp_path):
    """As a reader pastes them: one after the other into a fresh interpreter, at the settings they
    show, in a folder of the reader's (nothing is written there: the walk writes to its OUT)."""
    import subprocess
    import sys
    text = open(os.path.join(ROOT, "docs", "python.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5, "docs/python.md lost its examples"
    script = tmp_path / "walk.py"
    script.write_text("\n".join(blocks))
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=work, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    shown = done.stdout
    assert "efficientnet_lite0" in shown and "logreg" in shown and "(3, 1472)" in shown
    assert os.listdir(work) == []


def _parser_flags() -> dict:
    """verb -> its long options, read from the command line's parser."""
    from cnncodes import cli
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {verb: {f for a in p._actions for f in a.option_strings if f.startswith("--") and f != "--help"}
            for verb, p in sub.choices.items()}


def test_the_command_reference_names_every_option_and_no_other():
    """docs/cli.md names every option the parser knows (a new flag cannot go undocumented), and no
    `cnncodes VERB ...` line in README or docs passes a flag that does not exist."""
    flags = _parser_flags()
    reference = open(os.path.join(ROOT, "docs", "cli.md")).read()
    missing = sorted(f"{verb} {flag}" for verb, known in flags.items() for flag in known if flag not in reference)
    assert not missing, f"docs/cli.md does not mention: {missing}"
    pages = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "CONTRIBUTING.md")] + [
        os.path.join(ROOT, "docs", name) for name in os.listdir(os.path.join(ROOT, "docs")) if name.endswith(".md")]
    unknown = []
    for page in pages:
        for verb, rest in re.findall(r"(?:cnncodes|pipeline\.py) ([a-z-]+)([^\n`]*)", open(page).read()):
            if verb in flags:
                unknown += [f"{os.path.basename(page)}: {verb} {flag}" for flag in
                            re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest) if flag not in flags[verb] | {"--help"}]
    assert not unknown, unknown


def test_the_readme_stays_short_and_links_pages_that_exist():
    text = open(os.path.join(ROOT, "README.md")).read()
    assert len(text.splitlines()) <= 150
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" not in target:
            assert os.path.exists(os.path.join(ROOT, target)), target
