"""Fixtures shared by the test modules. Plain helpers and constants are in tests/support/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.analysis_store import write_mlflow_study


@pytest.fixture(scope="module")
def mlflow_study_storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storage folder holding the small MLflow study of tests/support/analysis_store.py (one
    per test module): pass it to ``load.load_study`` or ``--storage``."""
    path = tmp_path_factory.mktemp("storage")
    write_mlflow_study(path)
    return path
