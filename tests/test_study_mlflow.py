"""The study's MLflow layout: nested runs, one batched write per report, outcomes and summaries.

Against a real MLflow SQLite store; Tune trials are Ray's own ``Trial`` objects (stubs: no actor).
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from study import metrics as m
from study.mlflow_logging import (
    MlflowStudyCallback,
    create_study_run,
    encoded_params,
    open_experiment,
    report_metrics,
    values_by_step,
)
from study.plan import PLAN, POPULATION, expand
from study.results import default_tracking_uri
from study.spec import validate_spec

SPEC = validate_spec(
    {
        "name": "mlflow_unit",
        "env": "Pendulum-v1",
        "design": "one_at_a_time",
        "factors": {"tau": [0.005, 1.0]},
        "seeds": [0, 1],
        "budget": {"steps": 2_000, "eval_every": 1_000, "checkpoint_every": 1_000},
        "scheduler": {"grace_period": 1_000},
    }
)


PLANS = {(plan.arm, plan.seed): plan for plan in expand(SPEC)}


def make_trial(arm: str, seed: int, trial_id: str) -> Trial:
    """A Tune trial of SPEC as study.run makes it: its plan in its config."""
    config = {PLAN: PLANS[arm, seed].model_dump(mode="json")}
    return Trial("td3_trial", config=config, trial_id=trial_id, stub=True)


class CountingClient(MlflowClient):
    """The real client, counting its write calls."""

    calls: dict[str, int] = {}

    def log_batch(self, *args: Any, **kwargs: Any) -> Any:
        CountingClient.calls["log_batch"] = CountingClient.calls.get("log_batch", 0) + 1
        return super().log_batch(*args, **kwargs)

    def log_metric(self, *args: Any, **kwargs: Any) -> Any:
        CountingClient.calls["log_metric"] = CountingClient.calls.get("log_metric", 0) + 1
        return super().log_metric(*args, **kwargs)


def report(step: int, **values: float) -> dict[str, Any]:
    row = m.complete_report({m.ENV_STEPS: step, **values})
    return {**row, "arm": "x", "seed": 0, "time_total_s": step / 100.0}


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, MlflowClient, str]:
    uri = default_tracking_uri(tmp_path)
    client = MlflowClient(uri)
    experiment_id = open_experiment(client, SPEC.name, tmp_path / "mlartifacts")
    return uri, client, create_study_run(client, experiment_id, SPEC, smoke=False)


def make_callback(uri: str, study_run_id: str) -> MlflowStudyCallback:
    callback = MlflowStudyCallback(SPEC, uri, study_run_id)
    callback._client = CountingClient(uri)
    callback._experiment_id = callback._client.get_run(study_run_id).info.experiment_id
    callback.setup()
    return callback


def runs_by_role(client: MlflowClient, study_run_id: str, role: str) -> list[Any]:
    experiment_id = client.get_run(study_run_id).info.experiment_id
    return client.search_runs([experiment_id], f"tags.`study.role` = '{role}'")


def test_report_metrics_take_every_design_metric_at_env_steps_and_nothing_else() -> None:
    metrics = report_metrics(report(1_500, **{m.EVAL_RETURN: -150.0}), timestamp_ms=1)
    assert {metric.key for metric in metrics} == set(m.REPORT_KEYS)
    assert {metric.step for metric in metrics} == {1_500}
    assert next(x.value for x in metrics if x.key == m.EVAL_RETURN) == -150.0


def test_params_are_json_with_nested_keys_joined_by_dots() -> None:
    assert encoded_params("agent", {"tau": 0.01, "reward_clip": None, "hidden_sizes": (64, 64), "sub": {"a": True}}) == {
        "agent.tau": "0.01", "agent.reward_clip": "null", "agent.hidden_sizes": "[64, 64]", "agent.sub.a": "true",
    }


def test_a_step_logged_again_after_a_retry_counts_with_its_later_value() -> None:
    # First attempt: steps 500..1500, the last two then abandoned; the retry from the checkpoint
    # at 500 logs 1000 and 1500 again, later and lower.
    history = [Metric("debug/actor_q_max", value, timestamp, step) for value, timestamp, step in
               [(5.0, 1, 500), (9e6, 2, 1_000), (8e6, 3, 1_500), (6.0, 10, 1_000), (7.0, 11, 1_500)]]
    assert values_by_step(history) == [5.0, 6.0, 7.0]


def test_experiment_is_tagged_as_model_development_new_or_old(tmp_path: Path) -> None:
    """MLflow's UI reads ``mlflow.experimentKind``; an experiment made before the tag gets it too."""
    client = MlflowClient(default_tracking_uri(tmp_path))
    new = open_experiment(client, "fresh", tmp_path / "mlartifacts")
    old = client.create_experiment("older")
    assert open_experiment(client, "older", None) == old
    for experiment_id in (new, old):
        assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_trials_nest_under_their_arm_and_arms_are_top_level_runs_of_the_study(store: tuple[str, MlflowClient, str]) -> None:
    uri, client, study_run_id = store
    callback = make_callback(uri, study_run_id)
    trials = [make_trial("tau=1.0", s, f"t{s}") for s in (0, 1)]
    trials.append(make_trial("baseline", 0, "b0"))
    for started in trials:
        callback.on_trial_start(iteration=0, trials=trials, trial=started)

    arms = {run.data.tags["arm"]: run for run in runs_by_role(client, study_run_id, "arm")}
    assert set(arms) == {"tau=1.0", "baseline"}
    # Top level, so MLflow's runs table shows the arms side by side; tied to the study by a tag.
    assert not [run for run in arms.values() if "mlflow.parentRunId" in run.data.tags]
    assert {run.data.tags["study.run_id"] for run in arms.values()} == {study_run_id}
    assert arms["tau=1.0"].data.params == {"tau": "1.0"} and arms["baseline"].data.params == {"tau": "0.005"}
    children = runs_by_role(client, study_run_id, "trial")
    runaway = [run for run in children if run.data.tags["arm"] == "tau=1.0"]
    assert sorted(run.data.tags["seed"] for run in runaway) == ["0", "1"]
    assert {run.data.tags["mlflow.parentRunId"] for run in runaway} == {arms["tau=1.0"].info.run_id}
    params = runaway[0].data.params
    assert params["tau"] == "1.0" and params["agent.tau"] == "1.0" and params["agent.batch_size"] == "256"
    assert params["agent.reward_clip"] == "null" and params["agent.hidden_sizes"] == "[256, 256]"  # JSON
    assert "seed" in params and "agent.critic_l2" in params


def test_each_report_is_one_batched_write_and_the_outcome_ends_the_run(store: tuple[str, MlflowClient, str]) -> None:
    uri, client, study_run_id = store
    callback = make_callback(uri, study_run_id)
    trial = make_trial("tau=1.0", 0, "t0")
    callback.on_trial_start(iteration=0, trials=[trial], trial=trial)
    CountingClient.calls.clear()
    callback.on_trial_result(iteration=1, trials=[trial], trial=trial,
                             result=report(500, **{m.ACTOR_Q_MAX: 5.0, "stop_reason": "", "stop_step": math.nan}))
    assert CountingClient.calls == {"log_batch": 1}  # ~50 metrics, one write

    final = report(1_000, **{m.EVAL_RETURN: -1_200.0, m.ACTOR_Q_MAX: 9e5, m.ACTOR_Q_MIN: -3.0,
                             "guard/q_low": -1_600.0, "guard/q_high": 0.0})
    callback.on_trial_result(iteration=2, trials=[trial], trial=trial,
                             result={**final, "stop_reason": "q_explosion", "stop_step": 1_000})
    (run,) = runs_by_role(client, study_run_id, "trial")
    assert run.info.status == "FINISHED"
    assert (run.data.tags["stop_reason"], run.data.tags["stop_step"]) == ("q_explosion", "1000")
    assert run.data.metrics["summary/max_actor_q"] == 9e5 and run.data.metrics["summary/env_steps"] == 1_000
    assert [x.step for x in client.get_metric_history(run.info.run_id, m.ACTOR_Q_MAX)] == [500, 1_000]
    artifacts = Path(client.download_artifacts(run.info.run_id, "summary.json"))
    summary = json.loads(artifacts.read_text())
    assert summary["stop_reason"] == "q_explosion" and summary["config"]["agent"]["tau"] == 1.0
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"config.json", "summary.json"}


def test_an_errored_trial_is_filed_as_error_and_failed(store: tuple[str, MlflowClient, str]) -> None:
    uri, client, study_run_id = store
    callback = make_callback(uri, study_run_id)
    trial = make_trial("baseline", 1, "e1")
    callback.on_trial_start(iteration=0, trials=[trial], trial=trial)
    callback.on_trial_error(iteration=1, trials=[trial], trial=trial)
    (run,) = runs_by_role(client, study_run_id, "trial")
    assert run.data.tags["stop_reason"] == "error" and run.info.status == "FAILED"


def test_a_restored_callback_keeps_logging_into_the_runs_it_made(store: tuple[str, MlflowClient, str]) -> None:
    uri, client, study_run_id = store
    callback = make_callback(uri, study_run_id)
    trial = make_trial("baseline", 0, "r0")
    callback.on_trial_result(iteration=1, trials=[trial], trial=trial, result=report(500))
    # Tune pickles callbacks with the experiment; a resumed driver unpickles a fresh copy.
    restored = pickle.loads(pickle.dumps(callback))
    assert restored._client is None and restored._trial_runs == {}
    restored.on_trial_result(iteration=2, trials=[trial], trial=trial, result=report(1_000))
    restored.on_experiment_end(trials=[trial])
    (run,) = runs_by_role(client, study_run_id, "trial")
    assert [x.step for x in client.get_metric_history(run.info.run_id, m.ENV_STEPS)] == [500, 1_000]
    assert len(runs_by_role(client, study_run_id, "arm")) == 1
    assert client.get_run(study_run_id).info.status == "FINISHED"


def test_a_resumed_study_lifts_arm_runs_an_earlier_version_nested(store: tuple[str, MlflowClient, str]) -> None:
    """Arm runs were nested under the study run before; the UI folds a nested run under its parent."""
    uri, client, study_run_id = store
    callback = make_callback(uri, study_run_id)
    trial = make_trial("baseline", 0, "n0")
    callback.on_trial_start(iteration=0, trials=[trial], trial=trial)
    (arm,) = runs_by_role(client, study_run_id, "arm")
    client.set_tag(arm.info.run_id, "mlflow.parentRunId", study_run_id)  # as the earlier version left it
    make_callback(uri, study_run_id)  # the resumed driver's callback, set up by Tune
    (arm,) = runs_by_role(client, study_run_id, "arm")
    assert "mlflow.parentRunId" not in arm.data.tags


def test_the_study_run_carries_the_study_files_published_returns(tmp_path: Path) -> None:
    """``reference.json`` on the study run holds the study file's ``reference`` as validated, which
    the analysis reads back (analysis.load); a study file without one writes none."""
    published = [{"source": "a paper, Table 2", "env": "Pendulum-v0", "env_steps": 2_000,
                  "returns": {"tau=1.0": {"mean": -900.0, "std": 50.0, "trials": 10, "label": "no target"}}}]
    spec = validate_spec({**SPEC.model_dump(mode="json"), "reference": published})
    client = MlflowClient(default_tracking_uri(tmp_path))
    experiment_id = open_experiment(client, spec.name, tmp_path / "mlartifacts")
    study_run = create_study_run(client, experiment_id, spec, smoke=False)
    document = json.loads(Path(client.download_artifacts(study_run, "reference.json", str(tmp_path))).read_text())
    assert document == [ref.model_dump(mode="json") for ref in spec.reference]
    assert document[0]["returns"]["tau=1.0"] == {"mean": -900.0, "std": 50.0, "trials": 10, "label": "no target"}
    plain = create_study_run(client, experiment_id, SPEC, smoke=False)
    assert client.list_artifacts(plain) == []


def test_a_regimes_runs_carry_the_regime_and_its_env_settings(tmp_path: Path) -> None:
    """Two arms of the same name in two regimes differ in MLflow by more than their names."""
    spec = validate_spec({
        "name": "mlflow_regimes", "env": "drive", "design": "one_at_a_time", "seeds": [0],
        "factors": {"critic_l2": [0.0, 0.01]}, "budget": {"steps": 2_000, "eval_every": 1_000, "checkpoint_every": 1_000},
        "regimes": {"plain": {}, "short": {"env_settings": {"max_episode_steps": 10, "reward": {"collision_penalty": 0.0}},
                                           "budget": {"steps": 1_000}}},
    })  # fmt: skip
    uri = default_tracking_uri(tmp_path)
    client = MlflowClient(uri)
    study_run_id = create_study_run(client, open_experiment(client, spec.name, tmp_path / "mlartifacts"), spec, smoke=False)
    callback = MlflowStudyCallback(spec, uri, study_run_id)
    trials = [Trial("td3_trial", config={PLAN: plan.model_dump(mode="json")}, trial_id=f"t{i}", stub=True)
              for i, plan in enumerate(expand(spec))]  # fmt: skip
    for trial in trials:
        callback.on_trial_start(iteration=0, trials=trials, trial=trial)

    study_params = client.get_run(study_run_id).data.params
    assert (study_params["steps"], study_params["steps.plain"], study_params["steps.short"]) == ("2000", "2000", "1000")
    for role in ("arm", "trial"):
        runs = {run.info.run_name: run for run in runs_by_role(client, study_run_id, role)}
        short = [run for name, run in runs.items() if name.startswith("short/")]
        plain = [run for name, run in runs.items() if name.startswith("plain/")]
        assert len(short) == len(plain) == 2, sorted(runs)
        assert {run.data.tags["regime"] for run in short} == {"short"} and {run.data.tags["regime"] for run in plain} == {"plain"}
        if role == "trial":  # on arm runs every param reads as a factor (analysis.load): env settings stay off them
            for run in short:
                assert run.data.params["env.max_episode_steps"] == "10" and run.data.params["env.reward.collision_penalty"] == "0.0"
            assert {run.data.params["steps"] for run in short} == {"1000"} and {run.data.params["steps"] for run in plain} == {"2000"}
        assert not [key for run in (plain if role == "trial" else [*plain, *short]) for key in run.data.params if key.startswith("env.")]


def test_a_populations_members_are_filed_as_the_trials_of_their_seeds(store: tuple[str, MlflowClient, str]) -> None:
    """One Tune trial runs an arm's seeds; each member logs into the run its single trial would
    have (tag trial_id ``<trial id>-s<seed>``), ends with its own outcome, and a crash past the
    retries files as ``error`` only the members that had none."""
    uri, client, study_run_id = store
    callback = make_callback(uri, study_run_id)
    members = [PLANS["tau=1.0", seed].model_dump(mode="json") for seed in (0, 1)]
    trial = Trial("td3_trial", config={POPULATION: members}, trial_id="p0", stub=True)
    callback.on_trial_start(iteration=0, trials=[trial], trial=trial)
    runs = {run.data.tags["trial_id"]: run for run in runs_by_role(client, study_run_id, "trial")}
    assert sorted(runs) == ["p0-s0", "p0-s1"]
    assert {(run.data.tags["arm"], run.data.tags["seed"]) for run in runs.values()} == {("tau=1.0", "0"), ("tau=1.0", "1")}
    for seed in (0, 1):
        callback.on_trial_result(iteration=1, trials=[trial], trial=trial, result={**report(500), "seed": seed, "stop_reason": ""})
    stopped = report(1_000, **{m.ACTOR_Q_MAX: 9e5})
    callback.on_trial_result(iteration=2, trials=[trial], trial=trial,
                             result={**stopped, "seed": 1, "stop_reason": "q_explosion", "stop_step": 1_000})
    callback.on_trial_result(iteration=3, trials=[trial], trial=trial, result={**report(1_500), "seed": 0, "stop_reason": ""})
    callback.on_trial_error(iteration=4, trials=[trial], trial=trial)
    runs = {run.data.tags["trial_id"]: run for run in runs_by_role(client, study_run_id, "trial")}
    assert (runs["p0-s1"].data.tags["stop_reason"], runs["p0-s1"].info.status) == ("q_explosion", "FINISHED")
    assert runs["p0-s1"].data.metrics["summary/max_actor_q"] == 9e5
    assert (runs["p0-s0"].data.tags["stop_reason"], runs["p0-s0"].data.tags["stop_step"]) == ("error", "1500")
    assert runs["p0-s0"].info.status == "FAILED"
    assert [x.step for x in client.get_metric_history(runs["p0-s0"].info.run_id, m.ENV_STEPS)] == [500, 1_500]
    assert len(runs_by_role(client, study_run_id, "arm")) == 1
