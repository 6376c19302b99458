"""Committed notebooks are sources: no outputs, one papermill `parameters` cell of literals, and a
paired percent script (jupytext) that holds the same cells."""

import ast
from pathlib import Path

import jupytext
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


def cells(nb) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in nb.cells]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_and_its_script_hold_the_same_cells(path):
    script = path.with_suffix(".py")
    assert script.is_file(), f"{script.name} missing: run `jupytext --sync {path.relative_to(path.parents[1])}`"
    drift = [i for i, (a, b) in enumerate(zip(cells(nbformat.read(path, as_version=4)), cells(jupytext.read(script))))
             if a != b]
    sync = f"`jupytext --sync {path.name}` updates the older of the two"
    assert len(nbformat.read(path, as_version=4).cells) == len(jupytext.read(script).cells), sync
    assert not drift, f"cells {drift} of {path.name} and {script.name} differ: {sync}"


def test_every_script_is_paired_with_a_notebook():
    scripts = sorted(Path(__file__).resolve().parents[1].glob("notebooks/**/*.py"))
    assert [s.with_suffix(".ipynb") for s in scripts] == NOTEBOOKS
