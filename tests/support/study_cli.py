"""``python -m study.run`` as a user runs it, in a subprocess, and the trial runs it left in the
MLflow store and Tune folder. Test support, not shipped; moved out of test_study_run.py."""

from __future__ import annotations

import json
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


def result_rows(experiment_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Trial id -> its result.json rows (one JSON object per report), complete lines only:
    Tune may be writing the file while a test polls it."""
    rows = {}
    for path in experiment_dir.glob("*/result.json"):
        complete = [line for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]
        lines = [json.loads(line) for line in complete if line.strip()]
        if lines:
            rows[lines[0]["trial_id"]] = lines
    return rows


def trial_processes(experiment_dir: Path) -> int:
    """How many processes ran the study's trials (each result row names its trial's process)."""
    return len({rows[0]["pid"] for rows in result_rows(experiment_dir).values()})
