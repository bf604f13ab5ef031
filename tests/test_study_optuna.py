"""The ``optuna`` design end to end: Optuna proposes configurations through Ray Tune, each runs
once per seed, and every trial lands in MLflow with the proposed values as its params."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.spec import load_spec
from tests.support.study_cli import run_cli, trial_runs


@pytest.mark.slow
def test_optuna_smoke_study_proposes_configurations_inside_their_distributions(tmp_path: Path) -> None:
    storage = tmp_path / "results"
    code, out = run_cli("--space", "optuna", "--smoke", "--storage", str(storage), timeout=900)
    assert code == 0, out
    spec = load_spec("optuna", smoke=True)
    runs = trial_runs(storage, "optuna")
    assert len(runs) == spec.num_samples * len(spec.seeds)
    proposals = set()
    for run in runs:
        params, tags = run.data.params, run.data.tags
        assert tags["stop_reason"] in ("completed", "asha", "q_explosion", "non_finite")
        assert "eval/return_mean" in run.data.metrics
        for name, distribution in spec.distributions.items():
            value = float(params[name])
            if distribution.type == "choice":
                assert value in [float(choice) for choice in distribution.values]
            else:
                assert distribution.low <= value <= distribution.high, (name, value)
        proposals.add(tuple(params[name] for name in spec.distributions))
    assert len(proposals) == spec.num_samples  # Optuna proposed distinct configurations
