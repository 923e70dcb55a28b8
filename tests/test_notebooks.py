"""The notebooks run end to end on a small generated organisation, and are committed clean.

They execute in a real ``python3`` Jupyter kernel of this virtualenv (ipykernel installs the
kernelspec into ``sys.prefix``). Sizes come from ``NB_*`` environment variables, which the
kernel inherits from this process.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_baselines", "02_tune_isolation_forest", "03_explain_signals"]

SMALL = {
    "NB_USERS": "30",
    "NB_DAYS": "3",
    "NB_WARMUP_DAYS": "1",
    "NB_TRAIN_USERS": "30",
    "NB_TRAIN_DAYS": "3",
    "NB_VAL_USERS": "30",
    "NB_TEST_USERS": "40",
    "NB_EVAL_DAYS": "3",
    "NB_TREES": "10,20",
    "NB_MAX_SAMPLES": "64,128",
    "NB_MAX_FEATURES": "1.0",
    "NB_SIGNALS": "3",
}


def test_all_notebooks_are_here() -> None:
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a cell has outputs"
            assert cell.execution_count is None, f"{path.name}: a cell has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_small_data(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in SMALL.items():
        monkeypatch.setenv(key, value)
    model_out = tmp_path / "models" / "nb-tuned"
    monkeypatch.setenv("NB_MODEL_OUT", str(model_out))
    monkeypatch.setenv("NB_MODEL_NAME", "nb-tuned")
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(
        book,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError with the cell and traceback on failure
    errors = [
        out
        for cell in book.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.get("output_type") == "error"
    ]
    assert not errors
    if path.stem == "02_tune_isolation_forest":
        # The tuned model went where it was told, through detector.train, and loads.
        from detector.model import load_model

        model = load_model(model_out)
        assert model.name == "nb-tuned"
        assert not (REPO / "models" / "nb-tuned").exists()
