"""The analysis report's expected files and the notebook run, for the report tests on a
hand-written store and on a real study run. Test support, not shipped; moved out of
test_analysis_report.py."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = PROJECT_ROOT / "analysis" / "ablation.ipynb"
REPORT_FILES = {"report.md", "report.html", "actor_q.png", "returns.png", "explosion.png", "trials.csv", "ablation.csv"}


def run_notebook(storage: Path, study: str | None = None) -> nbformat.NotebookNode:
    """Execute ablation.ipynb top to bottom with its parameters cell pointed at ``storage``."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1, "the notebook has one cell tagged 'parameters'"
    parameters[0].source = f"STORAGE = {str(storage)!r}\nSTUDY = {study!r}"
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(storage)}})
    client.execute(env=project_env())  # the kernel is a child process: it imports the project too
    return notebook


def project_env() -> dict[str, str]:
    """This environment with the project root on PYTHONPATH, for child processes."""
    paths = [str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def images(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))
