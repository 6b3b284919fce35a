"""docs/python.md's code blocks run, in order, in one namespace: the Python docs cannot drift."""
import os
import re

from conftest import ROOT


def test_every_python_block_of_the_python_docs_runs(tmp_path, capsys):
    text = open(os.path.join(ROOT, "docs", "python.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5, "docs/python.md lost its examples"
    namespace = {"OUT": str(tmp_path)}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/python.md block {i + 1}", "exec"), namespace)
    shown = capsys.readouterr().out
    assert "efficientnet_lite0" in shown and "logreg" in shown and "(3, 1280)" in shown
