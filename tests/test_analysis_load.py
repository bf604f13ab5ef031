"""Loading a study from an MLflow store and from a Ray Tune folder, written (by
tests/support/analysis_store.py) in exactly the layout of the results contract with the real
MLflow client (and Tune's file format), so every expected value is known. The end-to-end test on
a real study run is test_analysis_study.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from analysis import load
from study import metrics as m
from study import results as r
from tests.support.analysis_store import Q_INTERVAL, STEPS, STUDY, TRIALS, write_mlflow_study, write_tune_study


@pytest.fixture(scope="module")
def mlflow_results(mlflow_study_storage: Path) -> load.StudyResults:
    return load.load_study(mlflow_study_storage)


@pytest.fixture(scope="module")
def tune_results(tmp_path_factory: pytest.TempPathFactory) -> load.StudyResults:
    storage = tmp_path_factory.mktemp("tune_storage")
    write_tune_study(storage)
    return load.load_study(storage)


def _by_trial(results: load.StudyResults) -> pd.DataFrame:
    return results.trials.set_index("trial_id")


def test_mlflow_reads_design_factors_and_one_row_per_trial(mlflow_results: load.StudyResults) -> None:
    assert mlflow_results.name == STUDY
    assert mlflow_results.design == "one_at_a_time"
    assert mlflow_results.factors == ("tau",)
    assert list(mlflow_results.trials["arm"]) == ["baseline", "baseline", "tau=0.5", "tau=1.0", "tau=1.0"]
    trials = _by_trial(mlflow_results)
    assert trials.loc["t2", "tau"] == "1.0" and trials.loc["t0", "tau"] == "0.005"
    assert trials.loc["t1", "seed"] == 1


@pytest.mark.parametrize("source", ["mlflow_results", "tune_results"])
def test_trial_table_values(source: str, request: pytest.FixtureRequest) -> None:
    trials = _by_trial(request.getfixturevalue(source))
    assert trials.loc["t0", ["env_steps", "final_return", "best_return", "max_actor_q", "min_actor_q"]].tolist() == [
        2000, -400, -400, 5, -700
    ]
    assert trials.loc["t2", ["env_steps", "final_return", "max_actor_q", "stop_reason", "stop_step"]].tolist() == [
        1500, -1200, 5000, "q_explosion", 1500
    ]
    assert (trials.loc["t0", "q_low"], trials.loc["t0", "q_high"]) == Q_INTERVAL
    # Upper end 0: a ratio to it means nothing; the excess (in widths) is always defined.
    assert math.isnan(trials.loc["t2", "q_ratio"])
    assert trials.loc["t2", "q_excess"] == pytest.approx(5000 / 1600)
    assert trials.loc["t0", "q_excess"] == pytest.approx(5 / 1600)


@pytest.mark.parametrize("source", ["mlflow_results", "tune_results"])
def test_explosions_recorded_or_replayed(source: str, request: pytest.FixtureRequest) -> None:
    trials = _by_trial(request.getfixturevalue(source))
    assert trials["exploded"].to_dict() == {"t0": False, "t1": False, "t2": True, "t3": True, "t4": True}
    assert trials.loc["t2", "explosion_step"] == 1500  # the guard's stop
    assert trials.loc["t3", "explosion_step"] == 1000  # non-finite Q
    assert trials.loc["t4", "explosion_step"] == 2000  # replayed: out at 1500 and 2000
    assert trials.loc["t4", "stop_reason"] == "completed"  # what was recorded stays as recorded


def test_non_finite_trial_keeps_finite_extremes(mlflow_results: load.StudyResults) -> None:
    trials = _by_trial(mlflow_results)
    assert trials.loc["t3", "max_actor_q"] == 10
    assert trials.loc["t3", "final_return"] == -1300


def test_non_finite_q_reads_back_as_non_finite(mlflow_results: load.StudyResults) -> None:
    """MLflow stores inf as the largest float; the loader turns it back into inf."""
    curve = mlflow_results.curves.query("trial_id == 't3'").set_index(m.ENV_STEPS)
    assert curve.loc[1000, m.ACTOR_Q_MAX] == math.inf
    assert curve.loc[1000, m.GUARD_EXCESS] == math.inf


def test_curves_hold_every_report(mlflow_results: load.StudyResults, tune_results: load.StudyResults) -> None:
    for results in (mlflow_results, tune_results):
        curve = results.curves[results.curves["trial_id"] == "t0"]
        assert curve[m.ENV_STEPS].tolist() == STEPS
        assert curve[m.ACTOR_Q_MAX].tolist() == [2, 3, 4, 5]
        assert set(r.CURVE_KEYS) <= set(results.curves.columns)
        assert len(results.curves) == sum(len(t[-1]) for t in TRIALS.values())


def test_tune_and_mlflow_agree(mlflow_results: load.StudyResults, tune_results: load.StudyResults) -> None:
    """Levels come from the base config changed by the arm (the baseline keeps tau 0.005)."""
    assert (tune_results.design, tune_results.factors) == (mlflow_results.design, mlflow_results.factors)
    pd.testing.assert_frame_equal(tune_results.trials, mlflow_results.trials)


def test_tune_and_mlflow_agree_on_a_regimes_settings_as_factors(tmp_path: Path) -> None:
    """A regime's own settings are factors of its trials (study.plan.factor_names), read from either source."""
    write_mlflow_study(tmp_path, regime="fast", regime_agent={"lr_actor": 0.003})
    write_tune_study(tmp_path, regime="fast", regime_agent={"lr_actor": 0.003})
    from_mlflow, from_tune = load.load_mlflow(r.default_tracking_uri(tmp_path)), load.load_tune(tmp_path)
    assert from_tune.factors == from_mlflow.factors == ("lr_actor", "tau")
    assert set(from_tune.trials["lr_actor"]) == {"0.003"}
    pd.testing.assert_frame_equal(from_tune.trials, from_mlflow.trials)


def test_tune_trial_without_an_outcome(tmp_path: Path) -> None:
    """A last row with an empty reason: crashed if Tune left error.txt, else unfinished."""
    folder = write_tune_study(tmp_path)
    for trial_id in ("t0", "t1"):
        result = next(folder.glob(f"*{trial_id}*/result.json"))
        result.write_text(result.read_text().replace('"stop_reason": "completed"', '"stop_reason": ""'))
    (next(folder.glob("*t0*")) / "error.txt").write_text("Traceback ...")
    trials = _by_trial(load.load_tune(tmp_path))
    assert trials.loc["t0", "stop_reason"] == "error"
    assert pd.isna(trials.loc["t1", "stop_reason"])


def test_tune_resumed_trial_keeps_last_row_per_step(tmp_path: Path) -> None:
    folder = write_tune_study(tmp_path)
    result = next(folder.glob("*t0*/result.json"))
    lines = result.read_text().splitlines()
    replayed = json.loads(lines[1])  # a restore from the step-1000 checkpoint reports 1500 again
    replayed_late = {**json.loads(lines[2]), m.ACTOR_Q_MAX: 99.0}
    result.write_text("\n".join([*lines[:3], json.dumps(replayed_late), json.dumps(replayed), *lines[3:]]) + "\n")
    curve = load.load_tune(tmp_path, STUDY).curves.query("trial_id == 't0'")
    assert curve[m.ENV_STEPS].tolist() == STEPS
    assert curve.set_index(m.ENV_STEPS).loc[1500, m.ACTOR_Q_MAX] == 99.0


def test_unknown_study_names_the_studies_there(tmp_path: Path) -> None:
    write_tune_study(tmp_path)
    with pytest.raises(load.StudyNotFound, match=r"study 'nope'.*\['unit'\]"):
        load.load_study(tmp_path, "nope")
    with pytest.raises(load.StudyNotFound, match="studies there: none"):
        load.load_study(tmp_path / STUDY / "baseline_seed0_t0")
