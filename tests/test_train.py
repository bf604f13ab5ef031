"""``python -m study.train``: refuses bad input before training, writes what it promises, resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from study import metrics
from study.train import main

# A short Pendulum run: learning starts early so that every diagnostic exists by the end.
SHORT = [
    "--env", "Pendulum-v1",
    "--quiet",
    "--set", "learning_starts=300",
    "--set", "report_every=200",
    "--set", "eval_every=600",
    "--set", "checkpoint_every=600",
    "--set", "eval_episodes=2",
]


def test_unknown_key_exits_non_zero_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["--steps", "100", "--set", "tua=0.01", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tua" in err and "allowed" in err.lower()
    assert not out.exists()


def test_bad_value_names_the_key_and_the_allowed_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["--steps", "100", "--set", "tau=2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: tau") and "1" in err
    assert not out.exists()


def test_short_run_writes_summary_and_every_metric_to_tensorboard(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main([*SHORT, "--steps", "1200", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == 1200
    assert summary["stop_reason"] == "completed"
    assert isinstance(summary["final_return"], float)
    low, high = summary["q_low"], summary["q_high"]
    assert low < high <= 0.0  # Pendulum's rewards are all <= 0, seen in the buffer
    assert summary["max_actor_q"] is not None
    assert summary["config"]["agent"]["learning_starts"] == 300

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    logged = set(events.Tags()["scalars"])
    expected = set(metrics.REPORT_KEYS) - {metrics.ENV_STEPS}
    assert expected <= logged, sorted(expected - logged)
    steps = [event.step for event in events.Scalars("debug/actor_q_max")]
    assert steps[-1] == 1200 and steps == sorted(steps)


def test_resume_continues_from_the_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main([*SHORT, "--steps", "600", "--out", str(out)]) == 0
    first = json.loads((out / "summary.json").read_text())
    assert main([*SHORT, "--steps", "1200", "--out", str(out), "--resume"]) == 0
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["env_steps"] == 1200
    assert resumed["episodes"] > first["episodes"]  # counted on from the checkpoint, not from zero
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    steps = [event.step for event in events.Scalars("train/critic_loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 1200


def test_resume_without_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--steps", "100", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_guard_stops_a_run_without_target_network(tmp_path: Path) -> None:
    """tau=1 copies the networks into their targets every update; with lr 1e-3 the actor-path Q
    runs away within a few thousand steps (seen here: stopped at 2,500, min actor Q -3,936 against
    an interval low of -1,610)."""
    out = tmp_path / "runaway"
    runaway = ["--set", "tau=1.0", "--set", "lr_critic=1e-3", "--set", "lr_actor=1e-3"]
    assert main(["--env", "Pendulum-v1", "--quiet", "--steps", "8000", *runaway,
                 "--set", "learning_starts=1000", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] in ("q_explosion", "non_finite")
    assert summary["stop_step"] < 8000
    low, high = summary["q_low"], summary["q_high"]
    width = high - low
    assert summary["max_actor_q"] > high + 0.1 * width or summary["min_actor_q"] < low - 0.1 * width
