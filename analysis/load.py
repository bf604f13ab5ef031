"""Load a finished (or running) study into two tables: one row per trial, one row per report.

The MLflow store is the primary source: it holds the design, the factor levels of every arm and
each trial's final summary. A Ray Tune results folder is the fallback (a study run without
MLflow, or a store that was lost): it holds every reported row, from which the same summary is
derived. Either way the result is a ``StudyResults`` with the same columns, so tables, plots,
the report and the notebook never care where the numbers came from.

The layout read here is the one ``study.run`` writes (see the results contract in DESIGN.md).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run

from analysis import tables
from study import metrics as m
from study import results as r
from study.guard import GUARD_STOPS, GuardConfig
from study.plan import PLAN, POPULATION, TrialPlan, format_value, member_id
from study.spec.schema import Reference

DESIGNS = ("factorial", "one_at_a_time", "optuna")
# The reported series the analysis reads: the summary's (``r.CURVE_KEYS``), and beside actor-path Q
# its batch mean and Q on buffer actions, which the actor-path Q plot draws on the same axes: in the
# CARLA run the gap between the two was the discovery (actor-path Q 2.3M, buffer Q 43 to 70).
CURVE_COLUMNS: tuple[str, ...] = (*r.CURVE_KEYS, m.ACTOR_Q_MEAN, m.Q1_VALUE)
# A trial's row: its summary (the results contract's figures), then what the analysis derives.
TRIAL_COLUMNS = ("stop_reason", "stop_step", *r.SUMMARY_FIGURES, "q_ratio", "q_excess", "exploded", "explosion_step")


class StudyNotFound(LookupError):
    """No study of the requested name where we looked; the message lists what is there."""


@dataclass(frozen=True)
class MlflowRuns:
    """Where a study read from MLflow lives there, for writing its aggregates and report back."""

    tracking_uri: str
    experiment_id: str
    study_run_id: str
    arm_runs: dict[str, str]  # arm name -> its run id


@dataclass(frozen=True)
class StudyResults:
    """One study's results, whichever store they came from."""

    name: str
    design: str  # factorial | one_at_a_time | optuna
    factors: tuple[str, ...]
    trials: pd.DataFrame  # one row per trial: identity, factor levels, outcome (TRIAL_COLUMNS)
    curves: pd.DataFrame  # one row per report: trial_id, arm, seed, env_steps, CURVE_COLUMNS
    source: str  # where they came from: the tracking URI or the Tune folder
    env: str = ""  # the env the study ran on ("" where the store does not say)
    reference: tuple[Reference, ...] = ()  # the study file's published returns (study.spec.schema.Reference)
    mlflow: MlflowRuns | None = None  # None when read from a Tune folder


def load_study(
    storage: Path | str,
    study: str | None = None,
    *,
    tracking_uri: str | None = None,
    guard: GuardConfig | None = None,
) -> StudyResults:
    """A study from ``storage``: its MLflow store when there is one, else its Tune folder.

    ``study`` may be left out when the storage holds exactly one. ``guard`` is the guard setting
    replayed on trials the guard did not stop (default: the study defaults).
    """
    storage = Path(storage)
    if tracking_uri is not None or (storage / r.MLFLOW_DB).exists():
        return load_mlflow(tracking_uri or r.default_tracking_uri(storage), study, guard=guard)
    return load_tune(storage, study, guard=guard)


# --- MLflow -----------------------------------------------------------------------------------


def load_mlflow(tracking_uri: str, study: str | None = None, *, guard: GuardConfig | None = None) -> StudyResults:
    """A study from an MLflow store: the study run, its arm runs (tagged with its id), the trial runs
    nested under them."""
    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = {
        e.name: e.experiment_id for e in client.search_experiments() if _search(client, e.experiment_id, "study", 1)
    }
    name = _pick(study, list(experiments), f"MLflow store {tracking_uri}")
    experiment_id = experiments[name]

    # A resumed study reuses its run; a study started afresh under the same name adds one: the
    # latest is the study asked about.
    study_run = max(_search(client, experiment_id, "study"), key=lambda run: run.info.start_time)
    design = study_run.data.tags.get(r.STUDY_DESIGN, "")
    arms = [run for run in _search(client, experiment_id, "arm") if run.data.tags.get(r.STUDY_RUN) == study_run.info.run_id]
    arm_levels = {
        run.data.tags[r.ARM]: {key: format_value(r.decode_param(text), exact=True) for key, text in run.data.params.items()}
        for run in arms
    }
    factors = tuple(sorted({factor for params in arm_levels.values() for factor in params}))
    arm_ids = {run.info.run_id for run in arms}

    records, curves = [], []
    for run in _search(client, experiment_id, "trial"):
        if _parent(run) not in arm_ids:
            continue
        tags = run.data.tags
        identity = {"trial_id": tags.get(r.TRIAL_ID, run.info.run_id), "arm": tags[r.ARM], "seed": int(tags[r.SEED])}
        curve = _mlflow_curve(client, run.info.run_id).assign(**identity)
        metrics = {key: _unclamp(value) for key, value in run.data.metrics.items()}
        outcome = {"stop_reason": tags.get(r.STOP_REASON), "stop_step": r.as_number(tags.get(r.STOP_STEP))}
        summary = r.summary_from_metrics(metrics, stop_reason=outcome["stop_reason"], stop_step=tags.get(r.STOP_STEP))
        levels = {f: arm_levels[tags[r.ARM]].get(f) for f in factors}
        records.append(_trial_record(identity, levels, outcome, summary, curve, guard))
        curves.append(curve)
    env = str(r.decode_param(study_run.data.params.get("env")) or "")
    runs = MlflowRuns(tracking_uri, experiment_id, study_run.info.run_id, {run.data.tags[r.ARM]: run.info.run_id for run in arms})
    reference = _mlflow_reference(client, study_run)
    return _results(name, design, factors, records, curves, tracking_uri, runs, env=env, reference=reference)


def _search(client: MlflowClient, experiment_id: str, role: str, max_results: int | None = None) -> list[Run]:
    """Every run of one ``study.role`` in an experiment, across result pages."""
    query = f"tags.`{r.ROLE}` = '{role}'"
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], query, max_results=max_results or 1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token or max_results is not None:
            return runs


def _mlflow_reference(client: MlflowClient, study_run: Run) -> tuple[Reference, ...]:
    """The published returns the study file named, from the study run's ``reference.json``; none
    for a study without them (or one run before the study file could name them)."""
    run_id = study_run.info.run_id
    if r.REFERENCE_FILE not in {artifact.path for artifact in client.list_artifacts(run_id)}:
        return ()
    with tempfile.TemporaryDirectory() as folder, _artifact_progress_bar_off():
        document = json.loads(Path(client.download_artifacts(run_id, r.REFERENCE_FILE, folder)).read_text())
    return tuple(Reference.model_validate(item) for item in document)


@contextmanager
def _artifact_progress_bar_off() -> Iterator[None]:
    """MLflow draws a progress bar per download, which for one small JSON file would only cut into
    the lines ``study.run`` prints at the end; its own switch turns it off, here only."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _parent(run: Run) -> str | None:
    return run.data.tags.get(r.PARENT)


def _mlflow_curve(client: MlflowClient, run_id: str) -> pd.DataFrame:
    """The reported series of one trial run, one row per env step."""
    series = {}
    for key in CURVE_COLUMNS:
        history = client.get_metric_history(run_id, key)
        # A resumed trial logs again from its checkpoint's step: the later value wins.
        points = {point.step: _unclamp(point.value) for point in sorted(history, key=lambda p: p.timestamp)}
        series[key] = pd.Series(points, dtype=float)
    return _curve_frame(series)


def _unclamp(value: float) -> float:
    """MLflow stores +-inf as +-sys.float_info.max: turn them back into the non-finite values
    they were, so a non-finite actor-path Q reads as one."""
    return math.copysign(math.inf, value) if abs(value) == sys.float_info.max else value


# --- Ray Tune ---------------------------------------------------------------------------------


def load_tune(storage: Path | str, study: str | None = None, *, guard: GuardConfig | None = None) -> StudyResults:
    """A study from its Ray Tune folder ``<storage>/<study>/``: one ``result.json`` per Tune trial
    (a population trial's holds its members' reports, each row naming its seed: a trial each).

    ``study.run`` keeps the validated study file in ``study.json`` there (the design and the
    factors), and each trial's ``params.json`` holds its plan (grid designs: the factor levels
    it ran at), a population's member plans, or Optuna's proposal (the base config changed by ``set``).
    """
    storage = Path(storage)
    names = sorted(p.name for p in storage.iterdir() if (p / r.STATE_FILE).is_file()) if storage.is_dir() else []
    name = _pick(study, names, f"Tune folder {storage}")
    folder = storage / name
    spec = json.loads((folder / r.STATE_FILE).read_text())["spec"]
    # study.plan.factor_names, on the stored file: what the arms and the regimes change.
    regimes = spec.get("regimes", {}).values()  # a study from before regimes has none
    factors = tuple(sorted({*spec["factors"], *spec["distributions"], *(key for arm in spec["arms"] for key in arm["set"]),
                            *(key for regime in regimes for key in regime["agent"])}))  # fmt: skip
    records, curves = [], []
    for result_file in sorted(folder.glob(f"*/{r.TUNE_RESULT_FILE}")):
        all_rows = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        params = json.loads((result_file.parent / r.TUNE_PARAMS_FILE).read_text())
        errored = (result_file.parent / r.TUNE_ERROR_FILE).exists()  # Tune leaves it where a trial raised
        # A population trial's rows are its members' reports, each naming its seed: each member is a trial.
        members = [(seed, [row for row in all_rows if row[r.SEED] == seed]) for seed in sorted({row[r.SEED] for row in all_rows})]
        for seed, rows in members if POPULATION in params else [(None, all_rows)]:
            if not rows:
                continue  # started, never reported
            reported = r.reported_history(rows, errored=errored)
            last = reported.last
            trial_id = str(last["trial_id"]) if seed is None else member_id(str(last["trial_id"]), params, seed)
            identity = {"trial_id": trial_id, "arm": str(last[r.ARM]), "seed": int(last[r.SEED])}
            frame = pd.DataFrame(reported.steps).set_index(m.ENV_STEPS)
            curve = _curve_frame({key: frame[key].astype(float) for key in CURVE_COLUMNS if key in frame}).assign(**identity)
            if POPULATION in params:
                values = next(TrialPlan.model_validate(p) for p in params[POPULATION] if p["seed"] == seed).levels
            elif PLAN in params:
                values = TrialPlan.model_validate(params[PLAN]).levels
            else:
                values = {**spec["agent"], **params["set"]}
            levels = {factor: format_value(values[factor], exact=True) for factor in factors}
            outcome = {"stop_reason": reported.stop_reason, "stop_step": r.as_number(last.get(r.STOP_STEP))}
            records.append(_trial_record(identity, levels, outcome, None, curve, guard))
            curves.append(curve)
    reference = tuple(Reference.model_validate(item) for item in spec.get("reference", []))
    return _results(name, spec["design"], factors, records, curves, str(folder), env=spec.get("env", ""), reference=reference)


# --- shared -----------------------------------------------------------------------------------


def _pick(study: str | None, names: Sequence[str], where: str) -> str:
    if study is None and len(names) == 1:
        return names[0]
    if study is not None and study in names:
        return study
    asked = "a study name (--study)" if study is None else f"study {study!r}"
    raise StudyNotFound(f"{where}: need {asked}; studies there: {sorted(names) or 'none'}")


def _curve_frame(series: dict[str, pd.Series]) -> pd.DataFrame:
    """Series keyed by env step -> one frame with every ``CURVE_COLUMNS`` column, sorted by step."""
    frame = pd.DataFrame(series).reindex(columns=list(CURVE_COLUMNS)).astype(float)
    frame.index = frame.index.astype(float)
    return frame.sort_index().rename_axis(m.ENV_STEPS).reset_index()


def _trial_record(
    identity: dict[str, Any],
    levels: dict[str, str | None],
    outcome: dict[str, Any],
    summary: r.TrialSummary | None,
    curve: pd.DataFrame,
    guard: GuardConfig | None,
) -> dict[str, Any]:
    """One trial-table row. A trial without a stored summary (a Tune folder; a trial that died
    before its summary) is summarized from its reported curve, as the driver would have."""
    if summary is None:
        series = {key: curve[key].tolist() for key in r.CURVE_KEYS}
        summary = r.summarize(series, env_steps=int(curve[m.ENV_STEPS].max()) if len(curve) else 0,
                              stop_reason=outcome["stop_reason"], stop_step=outcome["stop_step"])
    values = {column: float(getattr(summary, column)) for column in r.SUMMARY_FIGURES}
    stop_reason = outcome["stop_reason"]
    if stop_reason in GUARD_STOPS:
        exploded, explosion_step = True, outcome["stop_step"]
    else:
        verdict, explosion_step = tables.guard_replay(curve[m.ENV_STEPS], curve[m.GUARD_EXCESS], guard)
        exploded = verdict is not None
    return {
        **identity,
        **levels,
        **values,
        "stop_reason": stop_reason,
        "stop_step": outcome["stop_step"],
        "q_ratio": tables.q_ratio(values["max_actor_q"], values["q_high"]),
        "q_excess": tables.q_excess(values["max_actor_q"], values["min_actor_q"], values["q_low"], values["q_high"]),
        "exploded": exploded,
        "explosion_step": explosion_step,
    }


def _results(
    name: str,
    design: str,
    factors: tuple[str, ...],
    records: list[dict[str, Any]],
    curves: list[pd.DataFrame],
    source: str,
    runs: MlflowRuns | None = None,
    *,
    env: str,
    reference: tuple[Reference, ...],
) -> StudyResults:
    if design not in DESIGNS:
        raise ValueError(f"study {name!r}: design {design!r} is not one of {DESIGNS}")
    identity = ["trial_id", "arm", "seed"]
    trials = pd.DataFrame(records, columns=[*identity, *factors, *TRIAL_COLUMNS])
    trials = trials.sort_values(["arm", "seed"], key=_arm_sort_key).reset_index(drop=True)
    columns = [*identity, m.ENV_STEPS, *CURVE_COLUMNS]
    curve_table = pd.concat(curves, ignore_index=True)[columns] if curves else pd.DataFrame(columns=columns)
    return StudyResults(name, design, factors, trials, curve_table, source, env, reference, runs)


def _arm_sort_key(column: pd.Series) -> pd.Series:
    if column.name != "arm":
        return column
    order = {arm: i for i, arm in enumerate(tables.arm_order(column))}
    return column.map(order)
