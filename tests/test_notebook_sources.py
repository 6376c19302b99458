"""Committed notebooks are sources: no outputs, one papermill `parameters` cell of literals."""

import ast
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted(Path(__file__).resolve().parents[1].glob("notebooks/**/*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_a_clean_source(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "outputs committed"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    tree = ast.parse(params[0].source)
    values = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant), "parameters must be literals"
        values.update({t.id: node.value.value for t in node.targets})
    assert {"stage_name", "profile", "reports_dir", "models_dir"} <= set(values)
    # opened by hand it runs what the smoke repro runs, writing beside the pipeline's results, not over them
    assert values["profile"] == "smoke"
    assert values["reports_dir"].startswith("reports/scratch") and values["models_dir"].startswith("models/scratch")
    assert nb.metadata.kernelspec.name == "python3"
