"""``python -m study.run`` as a user runs it, in a subprocess, and the trial runs it left in the
MLflow store. Test support, not shipped; moved out of test_study_run.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]


def study_cli(*args: str, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "study.run", *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen,
    )


def run_cli(*args: str, timeout: float) -> tuple[int, str]:
    process = study_cli(*args)
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def trial_runs(storage: Path, study: str) -> list[Any]:
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(study)
    return client.search_runs([experiment.experiment_id], "tags.`study.role` = 'trial'")
