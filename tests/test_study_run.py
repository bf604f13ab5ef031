"""``python -m study.run`` end to end: real Ray, real MLflow (SQLite), small budgets.

The slow tests run the CLI as a subprocess, as a user would, then read what it left: Tune's
folders (``result.json`` per trial) and the MLflow store.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import psutil
import pytest
import ray
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from study import metrics as m
from study import results as r
from study.run import collect_outcomes, folder_name, main, print_verdicts, publish_report, read_back, read_state
from study.plan import PLAN, POPULATION, expand, populations
from study.results import STATE_FILE, TUNE_PARAMS_FILE
from study.spec import SpecError, load_spec
from study.spec.schema import Regime
from tests.support.analysis_store import STUDY, write_mlflow_study
from tests.support.study_cli import result_rows, run_cli, study_cli, trial_runs

# A small Pendulum study for the failure paths: tiny networks, two trials, checkpoints often.
PLUMBING: dict[str, Any] = {
    "name": "plumbing",
    "env": "Pendulum-v1",
    "agent": {"learning_starts": 250, "hidden_sizes": [32, 32], "batch_size": 32},
    "design": "one_at_a_time",
    "factors": {"tau": [0.005, 0.01]},
    "seeds": [0],
    "budget": {"steps": 3_000, "eval_every": 500, "eval_episodes": 1, "report_every": 250, "checkpoint_every": 500},
    "scheduler": {"asha": False, "grace_period": 500},
}


def write_spec(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**PLUMBING, **changes}))
    return path


def tensorboard_curves(experiment_dir: Path, key: str) -> dict[str, list[int]]:
    """Trial folder -> the env steps of ``key`` in its TensorBoard events (as TensorBoard reads
    them, stale events purged); also checks that no tag carries Tune's ``ray/tune/`` prefix."""
    curves = {}
    for trial_dir in (params.parent for params in experiment_dir.glob(f"*/{TUNE_PARAMS_FILE}")):
        events = EventAccumulator(str(trial_dir))
        events.Reload()
        tags = events.Tags()["scalars"]
        assert not [tag for tag in tags if tag.startswith("ray/")], tags
        curves[trial_dir.name] = [event.step for event in events.Scalars(key)]
    return curves


def test_a_bad_study_file_is_refused_with_every_problem_named_and_ray_never_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_spec(tmp_path, agent={"tau": 2.0}, seeds=[], budget={"steps": 0}, typo=1)
    code = main(["--space", str(bad), "--storage", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2
    for key in ("agent.tau", "seeds", "budget.steps", "budget.eval_every", "typo"):
        assert key in err, f"{key} not named in:\n{err}"
    assert not ray.is_initialized()
    assert not (tmp_path / "results").exists()


def test_a_finished_study_is_not_silently_mixed_with_a_new_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path)
    (tmp_path / "results" / "plumbing").mkdir(parents=True)
    assert main(["--space", str(spec), "--storage", str(tmp_path / "results")]) == 2
    assert "add --resume" in capsys.readouterr().err
    assert main(["--space", str(spec), "--storage", str(tmp_path / "results"), "--resume"]) == 2
    assert "no study to continue" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_a_study_started_before_the_file_gained_a_key_resumes_but_a_changed_one_does_not(tmp_path: Path) -> None:
    spec = load_spec(str(write_spec(tmp_path)))
    experiment = tmp_path / "plumbing"
    experiment.mkdir()
    older = {k: v for k, v in spec.model_dump(mode="json").items() if k != "regimes"}  # a study from before regimes
    (experiment / STATE_FILE).write_text(json.dumps({"spec": older}))
    assert read_state(experiment, spec, resume=True)["spec"] == older
    changed = {**older, "seeds": [5]}
    (experiment / STATE_FILE).write_text(json.dumps({"spec": changed}))
    with pytest.raises(SpecError, match=r"changed since the study started \(keys \['seeds'\]\)"):
        read_state(experiment, spec, resume=True)
    with_regime = {**older, "regimes": {"fast": {"agent": {"tau": 0.05}}}}
    (experiment / STATE_FILE).write_text(json.dumps({"spec": with_regime}))
    with pytest.raises(SpecError, match=r"\(keys \['regimes'\]\)"):
        read_state(experiment, spec, resume=True)
    # A study with regimes, started before a regime could have a budget: its regimes had no such key.
    regime_spec = spec.model_copy(update={"regimes": {"fast": Regime(agent={"tau": 0.05})}})
    before_budgets = regime_spec.model_dump(mode="json")
    del before_budgets["regimes"]["fast"]["budget"]
    (experiment / STATE_FILE).write_text(json.dumps({"spec": before_budgets}))
    assert read_state(experiment, regime_spec, resume=True)["spec"] == before_budgets
    longer = regime_spec.model_copy(update={"regimes": {"fast": Regime(agent={"tau": 0.05}, budget={"steps": 1_000})}})
    with pytest.raises(SpecError, match=r"\(keys \['regimes'\]\)"):  # a regime's budget changed since
        read_state(experiment, longer, resume=True)


def test_a_study_that_cannot_be_read_back_gives_one_line_and_no_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A store that cannot be read back gives one line, not a traceback, and no verdicts, report or
    URL after it; other designs get a note instead of verdicts."""
    spec = load_spec(str(write_spec(tmp_path)))
    results = read_back(spec, tmp_path / "results", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    print_verdicts(spec, results, tmp_path / "results")
    assert results is None and publish_report(spec, results, tmp_path / "results") is None
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Results: could not read the study's results back from sqlite:///")
    assert "StudyNotFound" in lines[0]
    print_verdicts(spec.model_copy(update={"design": "factorial"}), None, tmp_path / "results")
    assert capsys.readouterr().out.strip() == "Verdicts: none for a factorial design (python -m analysis.report has its tables)"


def test_a_report_that_cannot_be_written_never_fails_a_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The report's folder taken by a file: one line, and no URL to print."""
    write_mlflow_study(tmp_path)
    spec = load_spec(str(write_spec(tmp_path))).model_copy(update={"name": STUDY})
    results = read_back(spec, tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert results is not None
    (tmp_path / STUDY).mkdir(exist_ok=True)
    (tmp_path / STUDY / "report").write_text("not a folder")
    assert publish_report(spec, results, tmp_path) is None
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Report: could not write it: "), lines


def rows(seed: int, *steps: tuple[int, float, str]) -> list[dict[str, Any]]:
    """Tune result rows of one seed: (env steps, eval return, stop reason or "")."""
    return [{m.ENV_STEPS: step, r.SEED: seed, m.EVAL_RETURN: ret, r.STOP_REASON: reason,
             r.STOP_STEP: step if reason else None} for step, ret, reason in steps]  # fmt: skip


def tune_result(config: dict[str, Any], reported: list[dict[str, Any]], error: Exception | None = None) -> Any:
    """What ``collect_outcomes`` reads of a ``ray.tune.Result``: its rows, config and error."""
    return SimpleNamespace(metrics_dataframe=pd.DataFrame(reported), config=config, error=error)


def test_a_trials_outcome_is_the_row_it_wrote_last_and_its_curve_the_later_report_of_each_step(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path))
    plan = expand(spec)[0]
    # A first attempt reached 400; its retry, from the checkpoint at 200, stopped at 300.
    reported = rows(0, (100, -900.0, ""), (200, -800.0, ""), (300, -700.0, ""), (400, -600.0, ""),
                    (300, -650.0, "q_explosion"))  # fmt: skip
    (outcome,) = collect_outcomes(spec, [tune_result({PLAN: plan.model_dump(mode="json")}, reported)])
    figures = outcome.summary
    assert (figures.stop_reason, figures.stop_step, figures.env_steps) == ("q_explosion", 300, 300)
    assert figures.best_return == -600.0  # the step-400 row stays in the curve, as in analysis.load
    assert (outcome.arm, outcome.seed) == (plan.arm, plan.seed)


def test_a_trial_that_failed_past_its_retries_is_an_error_unless_its_last_row_says_it_ended(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path))
    first, second = expand(spec)[:2]
    crashed = tune_result({PLAN: first.model_dump(mode="json")}, rows(0, (100, -900.0, "")), RuntimeError("crash"))
    ended = tune_result({PLAN: second.model_dump(mode="json")}, rows(0, (3000, -200.0, "completed")), RuntimeError("in cleanup"))
    never_reported = tune_result({PLAN: first.model_dump(mode="json")}, [], RuntimeError("at start"))
    outcomes = collect_outcomes(spec, [crashed, ended, never_reported])
    reasons = sorted((o.arm, o.summary.stop_reason, o.summary.env_steps) for o in outcomes)
    assert reasons == sorted([(first.arm, "error", 100), (second.arm, "completed", 3000), (first.arm, "error", 0)])


def test_a_populations_members_are_split_by_seed_and_keep_the_outcomes_they_had(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, seeds=[0, 3], execution="population"))
    members = populations(spec)[0]
    reported = [*rows(0, (100, -900.0, "")), *rows(3, (100, -950.0, "")), *rows(0, (200, -800.0, "")),
                *rows(3, (200, -850.0, "q_explosion")), *rows(0, (300, -700.0, ""))]  # fmt: skip
    config = {POPULATION: [plan.model_dump(mode="json") for plan in members]}
    outcomes = collect_outcomes(spec, [tune_result(config, reported, RuntimeError("past its retries"))])
    by_seed = {o.seed: o.summary for o in outcomes}
    assert (by_seed[3].stop_reason, by_seed[3].stop_step, by_seed[3].final_return) == ("q_explosion", 200, -850.0)
    assert (by_seed[0].stop_reason, by_seed[0].env_steps, by_seed[0].final_return) == ("error", 300, -700.0)


@pytest.mark.slow
def test_smoke_default_study_end_to_end(tmp_path: Path) -> None:
    storage = tmp_path / "results"
    code, out = run_cli("--smoke", "--storage", str(storage), timeout=900)
    assert code == 0, out
    spec = load_spec("default", smoke=True)
    runs = trial_runs(storage, "default")
    assert len(runs) == len(expand(spec))
    outcomes = {}
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        assert {"arm", "seed", "trial_id", "stop_reason", "stop_step"} <= set(tags), tags
        assert {"eval/return_mean", "debug/actor_q_max", "guard/actor_q_excess", "summary/max_actor_q"} <= set(metrics)
        assert run.info.status == "FINISHED"
        outcomes.setdefault(tags["arm"], set()).add(tags["stop_reason"])
    # The runaway regime's baseline runs away in seed 0; the remedies are the study's question.
    assert outcomes.pop("seed_reward_lr1e-3_tau0.05/baseline") == {"q_explosion"}
    for arm in [arm for arm in outcomes if arm.startswith("td3_defaults/")]:
        assert outcomes[arm] == {"completed"}, f"healthy arm {arm} stopped as {outcomes[arm]}"
    # Tune's own files carry the outcome in each trial's last row, and arm and seed in every row.
    for rows in result_rows(storage / "default").values():
        assert all("arm" in row and "seed" in row for row in rows)
        assert rows[-1]["stop_reason"] in ("completed", "asha", "q_explosion")
    # TensorBoard: every trial's curves under the DESIGN.md names, against env steps.
    curves = tensorboard_curves(storage / "default", "debug/actor_q_max")
    assert len(curves) == len(runs) and all(steps and steps == sorted(steps) for steps in curves.values()), curves
    # Each trial's folder (its TensorBoard run) is named by its arm and seed.
    assert {name.split("_seed")[0] for name in curves} == {folder_name(run.data.tags["arm"]) for run in runs}, sorted(curves)
    assert "td3_defaults_baseline" in {name.split("_seed")[0] for name in curves}
    assert "mlflow ui --backend-store-uri sqlite:///" in out
    assert re.search(r"then open http://127\.0\.0\.1:5000/#/experiments/\d+/runs\?workflowType=machine_learning&viewStateShareKey=", out), out
    assert "Traceback" not in out, out  # a normal study's console
    # Progress while it runs: where the running trials are, every 30 s.
    assert re.search(r"\[\d+/4 done\] running: \S+ seed=0 \d+/4000", out), out
    # At the end, a verdict line per arm against the baseline, read back from the store: one seed
    # pairs nothing and judges nothing.
    assert "Verdicts (each arm against its regime's baseline;" in out, out
    assert re.search(r"seed_reward_lr1e-3_tau0\.05/critic_l2=0\.01: exploded [01]/1 vs 1/1 by [\d,]+ steps \(unpaired difference "
                     r"[^)]+\).*: too few seeds to judge runaways", out), out
    assert re.search(r"td3_defaults/critic_l2=0\.01: exploded 0/1 vs 0/1", out), out


@pytest.mark.slow
def test_a_killed_driver_is_continued_by_resume_without_restarting_trials(tmp_path: Path) -> None:
    steps = 6_000
    spec = write_spec(tmp_path, budget={**PLUMBING["budget"], "steps": steps})
    storage = tmp_path / "results"
    # Tune saves its experiment state every second here, so the kill cannot predate it by much.
    driver = study_cli("--space", str(spec), "--storage", str(storage), env={"TUNE_GLOBAL_CHECKPOINT_S": "1"},
                       start_new_session=True)
    experiment = storage / "plumbing"
    deadline = time.monotonic() + 300
    # Kill once every trial has persisted a checkpoint and reported past it.
    while time.monotonic() < deadline:
        rows = result_rows(experiment) if experiment.exists() else {}
        checkpoints = list(experiment.glob("*/checkpoint_*"))
        if len(rows) == 2 and len({c.parent for c in checkpoints}) == 2 and all(r[-1]["env_steps"] >= 1_000 for r in rows.values()):
            break
        time.sleep(1)
    else:
        driver.kill()
        pytest.fail("the study never reached its first checkpoints")
    time.sleep(2)  # one experiment-state save past those checkpoints
    kill_session(driver)
    assert driver.wait(timeout=30) == -signal.SIGKILL
    before = {trial: rows[-1]["env_steps"] for trial, rows in result_rows(experiment).items()}
    assert all(done < steps for done in before.values()), "the study finished before it was killed"

    code, out = run_cli("--space", str(spec), "--storage", str(storage), "--resume", timeout=600)
    assert code == 0, out
    for trial, rows in result_rows(experiment).items():
        assert rows[-1]["env_steps"] == steps and rows[-1]["stop_reason"] == "completed"
        restarts = [row["env_steps"] for row in rows if row["iterations_since_restore"] == 1]
        # The first start reports at 250; the resumed one continues from a checkpoint (>= 500).
        assert restarts[0] == 250 and len(restarts) == 2 and restarts[1] > 500, restarts
    runs = trial_runs(storage, "plumbing")
    assert len(runs) == 2 and {run.info.status for run in runs} == {"FINISHED"}
    # The steps reported twice (after the checkpoint, before the kill) show once in TensorBoard.
    curves = tensorboard_curves(experiment, "train/critic_loss")
    assert len(curves) == 2
    for logged in curves.values():
        assert logged == list(range(250, steps + 1, 250)), logged


@pytest.mark.slow
def test_a_trial_that_raises_is_retried_from_its_checkpoint(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, factors={"tau": [0.005]}, fault_injection={"fail_at_step": 1_250},
                      budget={**PLUMBING["budget"], "steps": 2_000})
    storage = tmp_path / "results"
    code, out = run_cli("--space", str(spec), "--storage", str(storage), timeout=600)
    assert code == 0, out
    (rows,) = result_rows(storage / "plumbing").values()
    starts = [row["env_steps"] for row in rows if row["iterations_since_restore"] == 1]
    # First attempt: 250 ... 1000 (checkpoint at 1000), raises at 1250 before reporting it.
    # The retry restores the checkpoint at 1000 and reports 1250 first.
    assert starts == [250, 1_250], starts
    assert rows[-1]["env_steps"] == 2_000 and rows[-1]["stop_reason"] == "completed"
    (run,) = trial_runs(storage, "plumbing")
    assert run.data.tags["retries"] == "1" and run.data.tags["stop_reason"] == "completed"


def kill_session(process: subprocess.Popen) -> None:
    """SIGKILL the driver and every process it started, as a crash of the whole job would."""
    family = [process.pid, *(child.pid for child in psutil.Process(process.pid).children(recursive=True))]
    os.killpg(process.pid, signal.SIGKILL)
    for pid in family:  # Ray may start helpers in sessions of their own
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
