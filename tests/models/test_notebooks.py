"""The notebooks run top to bottom on a small world; a failing cell fails the test."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import TEST_HASH_KEY

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.fixture(scope="module")
def notebook_env(small_world, tmp_path_factory):
    data = tmp_path_factory.mktemp("notebooks")
    values = {
        "OMNIOFFER_DATA_DIR": str(data),
        "OMNIOFFER_CONTACT_HASH_KEY": TEST_HASH_KEY.decode(),
        "OMNIOFFER_CONVERSION_WINDOW_DAYS": "1",
        "OMNIOFFER_OUTCOME_LATENESS_HOURS": "1",
        "OMNIOFFER_NB_EVENTS": str(small_world),
        "OMNIOFFER_NB_EVAL_CUSTOMERS": "150",
        "OMNIOFFER_NB_EVAL_DAYS": "6",
        "OMNIOFFER_NB_WARMUP_DAYS": "2",
        "MPLBACKEND": "Agg",
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield data
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.parametrize("name", ["retrain", "evaluate", "segments"])
def test_notebook_runs(name, notebook_env):
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    # The kernel starts in the repository root so `models`, `features` … import as installed.
    NotebookClient(book, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS.parent)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors == []
