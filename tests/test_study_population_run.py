"""``execution: population`` through ``python -m study.run``: an arm's seeds as one Tune trial, and
every figure a user reads (MLflow's seed runs, the Tune folder, TensorBoard, the console, the
verdicts) the same as when each seed is a trial of its own. Real Ray, real MLflow, as a user runs it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from analysis.load import StudyResults, load_mlflow, load_tune
from study.results import default_tracking_uri
from tests.support.study_cli import run_cli, trial_processes, trial_runs

# Tiny Pendulum networks; tolerance 1e-3 and patience 1 stop seed 3 at its first actor step (300),
# measured in tests/test_study_population.py, while seed 0 completes: a population with a frozen
# member and a running one.
STUDY: dict[str, Any] = {
    "name": "populations",
    "env": "Pendulum-v1",
    "agent": {"learning_starts": 200, "hidden_sizes": [32, 32], "batch_size": 32},
    "design": "one_at_a_time",
    "factors": {"tau": [0.005, 0.01]},
    "seeds": [0, 3],
    "guard": {"tolerance": 0.001, "patience": 1},
    "budget": {"steps": 1_500, "eval_every": 500, "eval_episodes": 1, "report_every": 100, "checkpoint_every": 200},
}


def run_study(tmp_path: Path, name: str, exit_code: int = 0, **changes: Any) -> tuple[Path, str]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**STUDY, **changes}))
    storage = tmp_path / name
    code, out = run_cli("--space", str(path), "--storage", str(storage), timeout=600)
    assert code == exit_code, out
    return storage, out


def by_seed(results: StudyResults) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trial and curve tables without Tune's trial ids, in arm, seed, step order."""
    trials = results.trials.drop(columns="trial_id").sort_values(["arm", "seed"]).reset_index(drop=True)
    curves = results.curves.drop(columns="trial_id").sort_values(["arm", "seed", "env_steps"]).reset_index(drop=True)
    return trials, curves


def verdicts(out: str) -> list[str]:
    lines = out.split("Verdicts (", 1)[1].splitlines()[1:]
    return lines[: lines.index("")]


@pytest.mark.slow
def test_an_arms_seeds_run_as_one_population_trial_file_what_per_seed_trials_file(tmp_path: Path) -> None:
    per_seed, per_seed_out = run_study(tmp_path, "per_seed", max_concurrent_trials=2)
    # The population study also crashes once, at 400 steps, after seed 3 froze at 300 (a checkpoint of
    # its own, as a single trial's guard stop has): Tune retries it from there, seed 3 stays frozen.
    population, out = run_study(tmp_path, "population", execution="population", fault_injection={"fail_at_step": 400})

    expected = load_mlflow(default_tracking_uri(per_seed))
    got = load_mlflow(default_tracking_uri(population))
    assert sorted(zip(expected.trials["arm"], expected.trials["seed"], expected.trials["stop_reason"])) == [
        ("baseline", 0, "completed"), ("baseline", 3, "q_explosion"), ("tau=0.01", 0, "completed"), ("tau=0.01", 3, "q_explosion"),
    ]
    for table, want in zip(by_seed(got), by_seed(expected), strict=True):
        pd.testing.assert_frame_equal(table, want)
    # The Tune folder, read without MLflow, splits each population trial into its members too.
    for table, want in zip(by_seed(load_tune(population, "populations")), by_seed(expected), strict=True):
        pd.testing.assert_frame_equal(table, want)
    assert verdicts(out) == verdicts(per_seed_out) and verdicts(out)
    # Per seed, two at a time, the later trials ran in the earlier ones' processes (reuse_actors),
    # also where the guard had stopped one (seed 3's, at 300).
    assert trial_processes(per_seed / "populations") <= 2  # 4 trials

    # Two Tune trials, one per arm; four seed runs in MLflow, each under its member id, each retried once.
    folders = sorted(p.parent for p in (population / "populations").glob("*/params.json"))
    assert [folder.name.split("_seeds")[0] for folder in folders] == ["baseline", "tau=0.01"]
    runs = trial_runs(population, "populations")
    assert sorted(run.data.tags["trial_id"][-3:] for run in runs) == ["-s0", "-s0", "-s3", "-s3"]
    # Retried: the members still learning at the crash; seed 3 had ended, as its single trial would have.
    assert sorted((run.data.tags["seed"], run.data.tags.get("retries"), run.info.status) for run in runs) == [
        ("0", "1", "FINISHED"), ("0", "1", "FINISHED"), ("3", None, "FINISHED"), ("3", None, "FINISHED")]

    # TensorBoard: each member's curve in its folder, the steps the retry reported again shown once.
    for folder in folders:
        steps = {}
        for seed in (0, 3):
            events = EventAccumulator(str(folder / f"seed{seed}"))
            events.Reload()
            steps[seed] = [event.step for event in events.Scalars("train/critic_loss")]
        assert steps == {0: list(range(200, 1_501, 100)), 3: [200, 300]}, steps

    # The console counts and names members as trials, each outcome once.
    assert len(re.findall(r"\[\d/4\] baseline seed=3: q_explosion at 300 env steps", out)) == 1, out
    assert re.search(r"\[\d/4\] tau=0\.01 seed=0: completed at 1500 env steps", out), out


@pytest.mark.slow
def test_a_population_that_fails_past_its_retries_keeps_the_outcomes_its_members_reached(tmp_path: Path) -> None:
    storage, out = run_study(tmp_path, "failing", exit_code=1, execution="population", factors={"tau": [0.005]}, max_failures=0,
                             fault_injection={"fail_at_step": 1_100})
    # Seed 3 stopped at 300, before the crash: q_explosion, as its single trial; seed 0 was still
    # learning: an error at its last report. MLflow and the Tune folder agree, and the study says so.
    for results in (load_mlflow(default_tracking_uri(storage)), load_tune(storage, "populations")):
        trials = results.trials.set_index("seed")
        assert (trials.loc[3, "stop_reason"], trials.loc[3, "stop_step"]) == ("q_explosion", 300)
        assert trials.loc[0, "stop_reason"] == "error"
    (seed0,) = [run for run in trial_runs(storage, "populations") if run.data.tags["seed"] == "0"]
    assert (seed0.data.tags["stop_step"], seed0.info.status) == ("1000", "FAILED")
    assert re.search(r"│ baseline │ +0 │ +1000 │.*│ error", out) and re.search(r"│ +3 │ +300 │.*│ q_explosion @ 300", out), out
