"""End to end: a small real study (``python -m study.run``: Ray Tune, MLflow, TD3 on Pendulum), then
the analysis on what it stored: the study's end published the report and each arm's aggregates into
MLflow, MLflow and the Tune folder give the same tables, the report command writes its files, the
notebook runs top to bottom.

The study is the smallest that still has what the tables need: two arms, two seeds each (so
intervals over seeds exist), several reports per trial. It takes about a minute and a half on two
busy cores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis import load, report, tables
from study import metrics as m
from study import results as r
from study.plan import arms
from study.spec import load_spec
from tests.support.notebook import REPORT_FILES, images, project_env, run_notebook
from tests.support.study_cli import run_cli

pytestmark = pytest.mark.slow

STUDY_FILE = """\
name: tiny
env: Pendulum-v1
agent: {learning_starts: 250, batch_size: 64}
design: one_at_a_time
factors: {tau: [0.005]}
arms: [{name: no_target, set: {tau: 1.0}}]  # a named arm: its factors come from `set`
seeds: [0, 1]
budget: {steps: 1000, eval_every: 500, eval_episodes: 1, report_every: 250, checkpoint_every: 500}
scheduler: {asha: false, grace_period: 500}
"""
REPORT_STEPS = [250, 500, 750, 1000]


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    space = root / "tiny.yaml"
    space.write_text(STUDY_FILE)
    command = [sys.executable, "-m", "study.run", "--space", str(space), "--storage", str(root / "results")]
    done = subprocess.run(command, env=project_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (root / "results" / CONSOLE).write_text(done.stdout + done.stderr)
    return root / "results"


CONSOLE = "console.txt"  # what the study printed, stdout and stderr


def test_the_study_ends_with_its_report_and_arm_aggregates_in_mlflow(storage: Path) -> None:
    """Before anything else touches the store: what ``study.run`` itself published at its end."""
    results = load.load_mlflow(r.default_tracking_uri(storage))
    runs, client = results.mlflow, MlflowClient(results.mlflow.tracking_uri)
    assert client.get_experiment(runs.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    table = tables.ablation_table(results.trials, results.curves)
    assert set(runs.arm_runs) == set(table.index) == {"baseline", "no_target"}
    for arm, run_id in runs.arm_runs.items():
        run = client.get_run(run_id)
        assert r.PARENT not in run.data.tags and run.data.tags[r.STUDY_RUN] == runs.study_run_id  # top level
        assert run.data.metrics["arm/seeds"] == 2
        # To 4 significant digits, as the runs table shows them (analysis.publish.arm_metrics).
        assert run.data.metrics["arm/explosion_rate"] == pytest.approx(table.loc[arm, "explosion_rate"], rel=5e-4)
        assert run.data.metrics["arm/return_mean"] == pytest.approx(table.loc[arm, "shared_return_mean"], rel=5e-4)
        curves = results.curves[results.curves["arm"] == arm]
        measured = sorted(int(step) for step in curves.loc[curves[m.ACTOR_Q_MAX].notna(), m.ENV_STEPS].unique())
        assert sorted(p.step for p in client.get_metric_history(run_id, f"seed_mean/{m.ACTOR_Q_MAX}")) == measured
        assert measured[-1] == REPORT_STEPS[-1]  # the env steps of the reports, from the first actor step
    assert REPORT_FILES == {Path(a.path).name for a in client.list_artifacts(runs.study_run_id, r.REPORT_ARTIFACTS)}
    console = (storage / CONSOLE).read_text()
    assert f"#/experiments/{runs.experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={runs.study_run_id}" in console
    assert "Traceback" not in console, console


def test_mlflow_store_loads_every_trial(storage: Path) -> None:
    results = load.load_mlflow(r.default_tracking_uri(storage))
    assert (results.name, results.design, results.factors) == ("tiny", "one_at_a_time", ("tau",))
    trials = results.trials
    assert sorted(zip(trials["arm"], trials["seed"], strict=True)) == [
        ("baseline", 0), ("baseline", 1), ("no_target", 0), ("no_target", 1)
    ]
    assert trials.set_index("arm")["tau"].to_dict() == {"baseline": "0.005", "no_target": "1.0"}
    assert (trials["env_steps"] == 1000).all() and (trials["stop_reason"] == "completed").all()
    assert trials[["final_return", "best_return", "max_actor_q", "q_low", "q_high"]].notna().all().all()
    assert (trials["q_low"] < trials["q_high"]).all()
    for _, curve in results.curves.groupby("trial_id"):
        assert curve[m.ENV_STEPS].tolist() == REPORT_STEPS


def test_tune_folder_gives_the_same_tables(storage: Path) -> None:
    from_mlflow = load.load_mlflow(r.default_tracking_uri(storage))
    from_tune = load.load_tune(storage)
    pd.testing.assert_frame_equal(from_tune.trials, from_mlflow.trials)
    order = ["trial_id", m.ENV_STEPS]
    pd.testing.assert_frame_equal(
        from_tune.curves.sort_values(order).reset_index(drop=True),
        from_mlflow.curves.sort_values(order).reset_index(drop=True),
    )


def test_report_command_on_the_study(storage: Path, capsys: pytest.CaptureFixture) -> None:
    assert report.main(["--storage", str(storage)]) == 0
    assert REPORT_FILES <= {p.name for p in (storage / "tiny" / report.REPORT_DIR).iterdir()}
    printed = capsys.readouterr().out
    assert "baseline" in printed and "no_target" in printed


def test_notebook_on_the_study(storage: Path) -> None:
    notebook = run_notebook(storage)
    assert images(notebook) == 3


def test_td3_paper_ablation_smoke_on_halfcheetah_shows_the_published_reference(tmp_path: Path) -> None:
    """The paper's ablation as CI runs it: ``python -m study.run --space td3_paper_ablation --smoke``
    on HalfCheetah-v5 (gymnasium's mujoco extra, in the dev install) to completion, then the report
    with the study file's published returns beside the measured ones, each column at its env step.
    About 4 minutes on two busy cores."""
    storage = tmp_path / "results"
    code, out = run_cli("--space", "td3_paper_ablation", "--smoke", "--storage", str(storage), timeout=900)
    assert code == 0, out[-3000:]
    spec = load_spec("td3_paper_ablation", smoke=True)
    results = load.load_study(storage, spec.name)
    assert results.env == "HalfCheetah-v5" and results.reference == tuple(spec.reference)
    assert sorted(results.trials["arm"]) == sorted(name for name, _ in arms(spec))
    assert set(results.trials["stop_reason"]) <= {"completed", "q_explosion"}
    assert results.curves[m.Q1_VALUE].notna().any() and results.curves[m.ACTOR_Q_MEAN].notna().any()
    assert report.main(["--storage", str(storage), "--study", spec.name]) == 0
    markdown = (storage / spec.name / report.REPORT_DIR / "report.md").read_text()
    section = markdown[markdown.index("## Published reference") : markdown.index("## Each arm against the baseline")]
    table, curve = spec.reference
    assert f"| [1] published at {table.env_steps:,} steps | [2] published at {curve.env_steps:,} steps |" in section
    for arm, figure in table.returns.items():
        assert f"| {arm} |" in section and report.published(figure) in section
    assert report.published(curve.returns["baseline"]) in section
    # The smoke budget is not the published figures' step, and the report says so.
    assert f"Measured returns are at {spec.budget.steps:,} env steps on HalfCheetah-v5." in section
    assert f"not comparable with them as they stand: [1] ({table.env_steps:,}), [2] ({curve.env_steps:,})" in section
