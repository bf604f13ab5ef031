"""A study's aggregates and report published into its MLflow store (``analysis.publish``), on the
store of tests/support/analysis_store.py (real MLflow client and SQLite store): every expected value
is worked out here from that file's reports, not from the code under test. How a browser shows it
is test_mlflow_ui.py."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from analysis import load, publish, report, tables
from analysis.publish import shown_figure
from study import metrics as m
from study import results as r
from tests.support.analysis_store import TRIALS, write_mlflow_study, write_tune_study
from tests.support.notebook import REPORT_FILES


def publish_study(storage: Path) -> tuple[load.StudyResults, MlflowClient, str]:
    """The store after ``analysis.report``'s write and publish (into ``storage/report``), and the URL
    publish returned."""
    write_mlflow_study(storage)
    results = load.load_study(storage)
    report.write_report(results, storage / "report")
    (storage / "report" / "my_notes.txt").write_text("a file of the user's beside the report")
    url = publish.publish(results, storage / "report")
    return results, MlflowClient(results.mlflow.tracking_uri), url


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[load.StudyResults, MlflowClient, str]:
    """One published store for the tests that only read it."""
    return publish_study(tmp_path_factory.mktemp("published"))


def history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    return {point.step: point.value for point in client.get_metric_history(run_id, key)}


def reported(arm: str, key: str) -> dict[int, list[float]]:
    """The fixture's reports of ``arm``'s seeds: env step -> the values of ``key`` reported there."""
    values: dict[int, list[float]] = {}
    for trial_arm, _seed, _reason, _step, reports in TRIALS.values():
        if trial_arm == arm:
            for row in reports:
                values.setdefault(int(row[m.ENV_STEPS]), []).append(row[key])
    return values


def test_arm_runs_carry_the_ablation_figures_at_step_zero(published) -> None:
    results, client, _ = published
    table = tables.ablation_table(results.trials, results.curves)
    for arm, run_id in results.mlflow.arm_runs.items():
        metrics, row = client.get_run(run_id).data.metrics, table.loc[arm]
        assert metrics["arm/seeds"] == row["n_seeds"] == sum(1 for trial in TRIALS.values() if trial[0] == arm)
        for name, column in [("explosion_rate", "explosion_rate"), ("explosion_rate_low", "explosion_rate_low"),
                             ("explosion_rate_high", "explosion_rate_high"), ("return_mean", "shared_return_mean"),
                             ("return_mean_low", "shared_return_mean_low"), ("return_mean_high", "shared_return_mean_high"),
                             ("common_step", "shared_step"), ("median_explosion_step", "median_explosion_step"),
                             ("exploded", "exploded"), ("observed", "observed")]:  # fmt: skip
            # To 4 significant digits: MLflow's runs table writes a figure out in full.
            assert metrics[f"arm/{name}"] == pytest.approx(row[column], rel=5e-4, nan_ok=True), (arm, name)
            assert math.isnan(metrics[f"arm/{name}"]) or shown_figure(metrics[f"arm/{name}"]) == metrics[f"arm/{name}"]
        assert set(history(client, run_id, "arm/explosion_rate")) == {0}
    # The figures a person reads: both seeds of tau=1.0 ran away, the baseline's did not; one seed, no interval.
    by_arm = {arm: client.get_run(run_id).data.metrics for arm, run_id in results.mlflow.arm_runs.items()}
    assert (by_arm["tau=1.0"]["arm/explosion_rate"], by_arm["baseline"]["arm/explosion_rate"]) == (1.0, 0.0)
    assert math.isnan(by_arm["tau=0.5"]["arm/return_mean_low"]) and math.isnan(by_arm["baseline"]["arm/median_explosion_step"])
    # Returns compare across arms at one step: tau=1.0's seed 1 last evaluated at 1,000, so every arm
    # is read there (the baseline's seeds: -900 and -1,000), not at the baseline's own 2,000.
    assert {arm: figures["arm/common_step"] for arm, figures in by_arm.items()} == dict.fromkeys(by_arm, 1000)
    assert by_arm["baseline"]["arm/return_mean"] == -950 and table.loc["baseline", "return_step"] == 2000


def test_arm_runs_carry_the_mean_curves_over_their_seeds_against_env_steps(published) -> None:
    results, client, _ = published
    for arm, run_id in results.mlflow.arm_runs.items():
        for key in (m.ACTOR_Q_MAX, m.Q1_VALUE):
            finite = {step: [v for v in values if math.isfinite(v)] for step, values in reported(arm, key).items()}
            assert history(client, run_id, f"seed_mean/{key}") == {s: sum(v) / len(v) for s, v in finite.items()}
        assert history(client, run_id, "seed_mean/seeds") == {s: len(v) for s, v in reported(arm, m.ENV_STEPS).items()}
        # Evaluations where they ran (every 1,000 steps), not the copies the reports between carry.
        evaluated = {s: [v for v in values if math.isfinite(v)] for s, values in reported(arm, m.EVAL_RETURN).items()
                     if s % 1_000 == 0}  # fmt: skip
        assert history(client, run_id, "seed_mean/eval/return_mean") == {s: sum(v) / len(v) for s, v in evaluated.items() if v}
    # tau=1.0 at 1,000 steps: seed 1's actor-path Q was non-finite, seed 0's 1,000 is the mean.
    assert history(client, results.mlflow.arm_runs["tau=1.0"], "seed_mean/debug/actor_q_max")[1_000] == 1_000
    # Seed runs keep their own curves.
    trial = client.search_runs([results.mlflow.experiment_id], "tags.`trial_id` = 't3'")[0]
    assert [p.step for p in client.get_metric_history(trial.info.run_id, m.ACTOR_Q_MAX)] == [500, 1_000]


def test_the_study_run_holds_the_report_with_its_figures_inline(published, tmp_path: Path) -> None:
    results, client, _ = published
    study_run = results.mlflow.study_run_id
    assert {Path(a.path).name for a in client.list_artifacts(study_run, r.REPORT_ARTIFACTS)} == REPORT_FILES  # not my_notes.txt
    uploaded = Path(client.download_artifacts(study_run, f"{r.REPORT_ARTIFACTS}/report.html", str(tmp_path))).read_text()
    local = (Path(results.source.removeprefix("sqlite:///")).parent / "report" / "report.html").read_text()
    assert 'src="actor_q.png"' in local and 'src="actor_q.png"' not in uploaded
    assert uploaded.count('src="data:image/png;base64,') == local.count("<img ") == 3
    assert uploaded.replace("data:image/png;base64,", "")[:200] == local[:200]  # the same report otherwise


def test_the_experiment_opens_on_a_view_of_the_arms_with_the_report_linked(published) -> None:
    results, client, url = published
    runs = results.mlflow
    tags = client.get_experiment(runs.experiment_id).tags
    view = json.loads(tags[f"mlflow.sharedViewState.{runs.study_run_id}"])
    assert view["searchFilter"] == f"tags.`study.run_id` = '{runs.study_run_id}'"
    assert view["selectedColumns"][:2] == ["metrics.`arm/seeds`", "metrics.`arm/explosion_rate`"]
    assert url == (f"http://127.0.0.1:5000/#/experiments/{runs.experiment_id}/runs?workflowType=machine_learning"
                   f"&viewStateShareKey={runs.study_run_id}")  # fmt: skip
    note = tags["mlflow.note.content"]
    assert url.split("/", 3)[3] in note
    assert f"#/experiments/{runs.experiment_id}/runs/{runs.study_run_id}/artifactPath/report/report.html" in note


def test_the_run_name_column_is_as_wide_as_the_longest_run_name(published, tmp_path: Path) -> None:
    """At its default width (190 px) ``regime/arm`` names lose the arm (the browser test sees them whole)."""

    def name_width(results: load.StudyResults, client: MlflowClient) -> int:
        tags = client.get_experiment(results.mlflow.experiment_id).tags
        view = json.loads(tags[f"mlflow.sharedViewState.{results.mlflow.study_run_id}"])
        assert view["columnOrder"][0] == "attributes.`Run Name`"  # the UI sizes only columns in the order
        return view["columnWidths"]["attributes.`Run Name`"]

    plain = name_width(*published[:2])
    write_mlflow_study(tmp_path, regime="seed_reward_lr1e-3_tau0.05")
    results = load.load_study(tmp_path)
    report.write_report(results, tmp_path / "report")
    publish.publish(results, tmp_path / "report")
    longest = max(len(f"{arm} seed={seed}") for arm, seed, *_ in TRIALS.values())  # the seed runs' names
    widened = name_width(results, MlflowClient(results.mlflow.tracking_uri)) - plain
    assert widened == 7 * len("seed_reward_lr1e-3_tau0.05/") and plain >= 7 * longest


def test_a_report_that_cannot_be_uploaded_leaves_the_arms_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_mlflow_study(tmp_path)
    results = load.load_study(tmp_path)
    report.write_report(results, tmp_path / "report")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("artifact store is read-only")

    monkeypatch.setattr(MlflowClient, "log_artifacts", refuse)  # the fault injected, not the behaviour under test
    url = publish.publish(results, tmp_path / "report")
    assert url is not None and "viewStateShareKey=" in url
    assert "could not upload the report to the study run: PermissionError: artifact store is read-only" in capsys.readouterr().out
    client = MlflowClient(results.mlflow.tracking_uri)
    assert client.get_run(results.mlflow.arm_runs["baseline"]).data.metrics["arm/seeds"] == 2
    runs = results.mlflow
    tags = client.get_experiment(runs.experiment_id).tags
    assert f"mlflow.sharedViewState.{runs.study_run_id}" in tags
    note = tags["mlflow.note.content"]
    assert url.split("/", 3)[3] in note  # the arms linked,
    assert "artifactPath/report" not in note and "its upload failed" in note  # the missing report not

    monkeypatch.undo()  # the store writable again: publishing again uploads the report and links it
    publish.publish(results, tmp_path / "report")
    assert "artifactPath/report/report.html" in client.get_experiment(runs.experiment_id).tags["mlflow.note.content"]


def test_publishing_again_logs_only_what_changed_and_keeps_a_persons_description(tmp_path: Path) -> None:
    results, client, _ = publish_study(tmp_path)
    runs = results.mlflow
    arm = runs.arm_runs["baseline"]
    before = {key: len(client.get_metric_history(arm, key)) for key in client.get_run(arm).data.metrics}
    client.set_experiment_tag(runs.experiment_id, "mlflow.note.content", "My notes on this study.")
    assert publish.publish(results, tmp_path / "report") is not None
    assert {key: len(client.get_metric_history(arm, key)) for key in before} == before
    assert client.get_experiment(runs.experiment_id).tags["mlflow.note.content"] == "My notes on this study."


def test_a_study_read_from_a_tune_folder_has_no_store_to_publish_into(tmp_path: Path) -> None:
    write_tune_study(tmp_path)
    results = load.load_study(tmp_path)
    assert results.mlflow is None and publish.publish(results, tmp_path) is None


def test_the_console_says_how_to_open_the_arms() -> None:
    url = "http://127.0.0.1:5000/#/experiments/1/runs?x"
    mlflow = Path(sys.executable).with_name("mlflow")  # the environment's own, as after make study (.venv/bin)
    assert mlflow.exists()
    assert publish.how_to_open("sqlite:////s/mlflow.db", url) == [
        f"MLflow: {mlflow} ui --backend-store-uri sqlite:////s/mlflow.db",
        f"        then open {url} (the arms side by side, the report linked above them)",
    ]
    assert publish.how_to_open("sqlite:////s/mlflow.db", None) == [f"MLflow: {mlflow} ui --backend-store-uri sqlite:////s/mlflow.db"]
    assert publish.runs_page_url("http://head:5000/", "3", "abc").startswith("http://head:5000/#/experiments/3/runs?")
    assert publish.how_to_open("http://head:5000", "http://head:5000/#/x") == ["MLflow: http://head:5000/#/x"]


def test_publishing_lifts_arm_runs_an_earlier_version_nested(tmp_path: Path) -> None:
    """Stores written before arms were top level nest them under the study run, which the UI folds."""
    write_mlflow_study(tmp_path)
    results = load.load_study(tmp_path)
    client = MlflowClient(results.mlflow.tracking_uri)
    for run_id in results.mlflow.arm_runs.values():
        client.set_tag(run_id, r.PARENT, results.mlflow.study_run_id)
    report.write_report(results, tmp_path / "report")
    publish.publish(results, tmp_path / "report")
    assert not [run_id for run_id in results.mlflow.arm_runs.values() if r.PARENT in client.get_run(run_id).data.tags]


def test_a_shown_figure_keeps_four_significant_digits_and_every_integer_digit() -> None:
    assert [shown_figure(v) for v in (0.5614970317550455, -1585.31, 317.9483, 123_456.0, 12_345.6, 7_000.0)] == [
        0.5615, -1585.0, 317.9, 123_456.0, 12_346.0, 7_000.0]
    assert shown_figure(0.0) == 0.0 and math.isnan(shown_figure(math.nan)) and shown_figure(-math.inf) == -math.inf
