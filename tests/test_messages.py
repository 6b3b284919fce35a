"""Errors in the caller's language (issue 47): every message the library raises names Python
parameters (``crop_size=``), never a command-line flag or pipeline.py; the command line turns them
into its flags through one table read from its parser, which covers every parameter they name."""
import ast
import os
import re

from conftest import ROOT

LIBRARY = ("extract", "cache", "classify", "cnncodes")
COMMAND_LINE = {os.path.join("cnncodes", "cli.py"), os.path.join("cnncodes", "_cli_options.py")}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
PARAMETER = re.compile(r"(?<![\w.`-])([a-z][a-z0-9_]*)=")
# Parameters of Python calls the command line never makes (a notebook's lists and DataFrames,
# compare's per-classifier params, an estimator's own): their errors reach Python callers only.
PYTHON_ONLY = {"labels", "params", "param", "columns"}


def _raised_texts():
    """(file:line, the text of each string a raise statement builds), shell commands in backticks
    (`cnncodes fit CACHE --model M`, `pip install ...`) taken out: those are commands to paste."""
    for top in LIBRARY:
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                path = os.path.join(folder, name)
                if not name.endswith(".py") or os.path.relpath(path, ROOT) in COMMAND_LINE:
                    continue
                for node in ast.walk(ast.parse(open(path).read())):
                    if not isinstance(node, ast.Raise) or node.exc is None:
                        continue
                    parts = [n.value for n in ast.walk(node.exc) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
                    text = re.sub(r"`(?:cnncodes|pip) [^`]*`", "", "".join(parts))
                    yield f"{os.path.relpath(path, ROOT)}:{node.lineno}", text


def test_no_raised_message_names_a_flag_or_pipeline_py():
    found = [(where, FLAG.findall(text) or "pipeline.py") for where, text in _raised_texts()
             if FLAG.search(text) or "pipeline.py" in text]
    assert not found, found


def test_the_command_lines_table_covers_every_parameter_an_error_names():
    from cnncodes.cli import flag_table
    table = flag_table()
    named = {(where, name) for where, text in _raised_texts() for name in PARAMETER.findall(text)}
    missing = sorted((where, name) for where, name in named if name not in set(table) | PYTHON_ONLY)
    assert not missing, f"errors name parameters the command line has no flag for: {missing}"


def test_the_command_line_says_flags():
    from cnncodes.cli import in_flags
    assert in_flags("crop_size=0: give a positive number of pixels") == "--crop-size 0: give a positive number of pixels"
    assert in_flags("jpeg_draft=True works with decoder=pil only") == "--jpeg-draft works with --decoder pil only"
    assert in_flags("they exceed max_memory=: raise it") == "they exceed --max-memory: raise it"
    assert in_flags("note: exclude=a.json: left out; exclude_reported=True too") == \
        "note: --exclude a.json: left out; --exclude-reported too"
    assert in_flags("e.g. a=b, x=1") == "e.g. a=b, x=1"  # not parameters of any verb: as written
    for untouched in ("runs/seed=3/codes.h5: wrote 5, skipped 0", "s3://bucket/device=pixel7/ is empty",
                      "https://host/x?format=npy&seed=1", "create it with `cnncodes extract DATA --cache seed=3.h5`"):
        assert in_flags(untouched) == untouched  # paths, URLs and pasted commands keep their '='


def test_a_closed_pipe_is_told_from_other_broken_pipes(monkeypatch):
    from cnncodes import cli

    def broken(args):
        raise BrokenPipeError("a worker's pipe")
    monkeypatch.setitem(cli.COMMANDS, "info", broken)
    import pytest
    with pytest.raises(BrokenPipeError):  # stdout is fine: a real error, not a reader that left
        cli.main(["info", "x.h5"])
