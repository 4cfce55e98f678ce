"""notebooks/: every teaching notebook runs top to bottom on CPU (its asserts are the checks) and is
stored without outputs (small diffs).

Executing needs nbclient and ipykernel (the ``test`` extra); without nbclient the run tests are skipped
with that reason, the storage checks still run.  Each notebook runs in a fresh ``python3`` kernel
started from the notebook's own folder, as Jupyter would; its first cell finds the repository root by
walking up from there.  Figures a notebook saves for the docs go to a temporary folder
(``BCQ_NB_IMG_DIR``), so a test run never rewrites ``docs/img``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # one cell; 01-04 take well under 60 s each, 05 (the real SmolLM2) about two minutes


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {ROOT / 'notebooks'}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, (
                f"{path.name}: cell {i} has outputs; clear them before committing "
                "(jupyter nbconvert --clear-output --inplace)")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbclient = pytest.importorskip(
        "nbclient", reason="nbclient is not installed: pip install nbclient ipykernel (the test extra)")
    import nbformat  # a dependency of nbclient

    monkeypatch.setenv("BCQ_NB_IMG_DIR", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError (the failing cell and its traceback) on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
