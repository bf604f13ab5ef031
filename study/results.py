"""The results contract: what a study writes and the analysis reads, declared once for both.

File names, MLflow tags and the encoding of parameters live here, and so does a trial's summary,
computed by one pure function from the trial's reported history. ``study.trial`` (summary.json),
the driver's MLflow callback (``summary/*`` metrics), the console table of ``study.run`` and
``analysis.load`` all call ``summarize``, so their figures agree by construction.

Layout:

- ``<storage>/<study>/study.json``: the validated study file and the MLflow study run's id;
  Tune's folders beside it (``params.json`` holds each trial's plan, ``result.json`` its reports).
- MLflow (``sqlite:///<storage>/mlflow.db`` by default): a run per study, a run per arm (top
  level, tagged ``study.run_id`` with its study run) and a run per seed nested under its arm,
  told apart by the tag ``study.role``; arm and seed runs carry the tags ``arm``, ``seed``,
  ``trial_id``, ``stop_reason``, ``stop_step``, and parameters as JSON text (``null``, ``true``,
  ``0.01``, ``[256, 256]``; strings as themselves) that ``decode_param`` reads back as the values.
  At the study's end arm runs get the arm's aggregates (``ARM_PREFIX``, ``SEED_MEAN_PREFIX``) and
  the study run the report (``REPORT_ARTIFACTS``), by ``analysis.publish``. The study run holds
  the study file's published returns (``reference``), when it has any, as ``reference.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from study import metrics as m

STATE_FILE = "study.json"  # in the Tune folder: the validated spec and the MLflow study run
MLFLOW_DB = "mlflow.db"
TUNE_RESULT_FILE = "result.json"
TUNE_PARAMS_FILE = "params.json"
TUNE_ERROR_FILE = "error.txt"  # Tune leaves it in the folder of a trial that raised
SUMMARY_FILE = "summary.json"  # a trial's summary: in its output folder and as an MLflow artifact
CONFIG_FILE = "config.json"  # a trial's resolved TrialConfig, as an MLflow artifact
REFERENCE_FILE = "reference.json"  # the study file's published returns (``reference``), on the study run

# MLflow tags
ROLE = "study.role"  # study | arm | trial
STUDY_RUN = "study.run_id"  # on arm and trial runs: the study run they belong to
PARENT = "mlflow.parentRunId"  # MLflow's own nesting tag: a trial run's arm run
STUDY_NAME, STUDY_DESIGN, STUDY_SMOKE = "study.name", "study.design", "study.smoke"
ARM, SEED, TRIAL_ID, RETRIES = "arm", "seed", "trial_id", "retries"
REGIME = "regime"  # on arm and trial runs of a study with regimes: the regime the arm is applied to
STOP_REASON, STOP_STEP = "stop_reason", "stop_step"  # also columns of Tune's result rows

# The experiment's kind, as MLflow's UI names it: model training, not a GenAI app.
EXPERIMENT_KIND, MODEL_DEVELOPMENT = "mlflow.experimentKind", "custom_model_development"

SUMMARY_PREFIX = "summary/"
ARM_PREFIX = "arm/"  # an arm run's aggregates over its seeds: arm/explosion_rate, arm/return_mean, ...
SEED_MEAN_PREFIX = "seed_mean/"  # an arm run's curves: seed_mean/<DESIGN.md name>, the mean over its seeds
REPORT_ARTIFACTS = "report"  # the study run's artifact folder holding analysis.report's files
# The reported series a summary (and the analysis' curves) are computed from. The analysis also
# reads buffer Q and the actor-path mean (analysis.load.CURVE_COLUMNS); they are not the summary's,
# so a trial's checkpointed history keeps its keys.
CURVE_KEYS: tuple[str, ...] = (m.EVAL_RETURN, m.EVAL_RETURN_STD, m.EVAL_STEP, m.ACTOR_Q_MAX, m.ACTOR_Q_MIN, m.Q_LOW, m.Q_HIGH,
                               m.GUARD_EXCESS)  # fmt: skip


def trial_run_name(arm: str, seed: int) -> str:
    """A trial's MLflow run name (an arm run is named by its arm)."""
    return f"{arm} seed={seed}"


def default_tracking_uri(storage: Path | str) -> str:
    """A SQLite store beside the Tune folders: ``mlflow ui --backend-store-uri`` opens it as is."""
    return f"sqlite:///{Path(storage).resolve() / MLFLOW_DB}"


# How stores written before this contract spelled None and booleans (Python's str()).
LEGACY_SPELLINGS: dict[str, Any] = {"None": None, "True": True, "False": False}


def encode_param(value: Any) -> str:
    """A parameter as MLflow text that reads back as the value it was: JSON (``null``, ``true``,
    ``0.01``, ``[256, 256]``), except a string, written as itself so that the UI's filters read
    ``params.weight_decay_mode = 'coupled'``."""
    if isinstance(value, str):
        return value
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def decode_param(text: str | None) -> Any:
    """The value ``encode_param`` wrote; text that is not JSON is a string (or, from an older
    store, a Python spelling of None or a boolean)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return LEGACY_SPELLINGS.get(text, text)


@dataclass(frozen=True)
class TrialSummary:
    """One trial's figures. NaN (None for the stop) where the trial never measured the value."""

    env_steps: int
    final_return: float  # the last evaluation's mean return
    final_return_std: float
    best_return: float  # the best evaluation's mean return
    max_actor_q: float  # the largest (smallest) batch actor-path Q the trial reported
    min_actor_q: float
    q_low: float  # the guard's interval at the last report
    q_high: float
    stop_reason: str | None  # completed | asha | q_explosion | non_finite | error; None: running
    stop_step: int | None

    def metrics(self) -> dict[str, float]:
        """The ``summary/*`` metrics of an MLflow trial run (the stop goes into tags)."""
        return {SUMMARY_PREFIX + key: float(getattr(self, key)) for key in SUMMARY_FIGURES}

    def as_json(self) -> dict[str, Any]:
        """Plain values for summary.json: None where NaN."""
        return {key: None if isinstance(v, float) and math.isnan(v) else v for key, v in asdict(self).items()}


# The summary's figures (its fields but the stop): ``summary/*`` metrics, analysis columns.
SUMMARY_FIGURES: tuple[str, ...] = tuple(key for key in TrialSummary.__dataclass_fields__ if key not in (STOP_REASON, STOP_STEP))


def summarize(
    history: Mapping[str, Sequence[float]], *, env_steps: int, stop_reason: str | None, stop_step: int | None
) -> TrialSummary:
    """A trial's summary from its reported series (``CURVE_KEYS`` -> values in step order).

    The caller passes each step once: after a retry or a resume, the later report of a step (the
    trial's checkpointed history, MLflow's latest timestamp, Tune's last row) is the one kept."""

    def finite(key: str) -> list[float]:
        return [v for v in history.get(key, []) if math.isfinite(v)]

    def last(key: str) -> float:
        values = finite(key)
        return values[-1] if values else math.nan

    def extreme(key: str, pick: Any) -> float:
        values = finite(key)
        return float(pick(values)) if values else math.nan

    return TrialSummary(
        env_steps=int(env_steps),
        final_return=last(m.EVAL_RETURN),
        final_return_std=last(m.EVAL_RETURN_STD),
        best_return=extreme(m.EVAL_RETURN, max),
        max_actor_q=extreme(m.ACTOR_Q_MAX, max),
        min_actor_q=extreme(m.ACTOR_Q_MIN, min),
        q_low=last(m.Q_LOW),
        q_high=last(m.Q_HIGH),
        stop_reason=stop_reason or None,
        stop_step=None if stop_step is None or not math.isfinite(stop_step) else int(stop_step),
    )


@dataclass(frozen=True)
class ReportedHistory:
    """A trial's reported rows (Tune's ``result.json``), read the way every reader reads them."""

    last: Mapping[str, Any]  # the row written last ({} where the trial never reported)
    stop_reason: str | None  # completed | asha | q_explosion | non_finite | error; None: unfinished
    steps: list[Mapping[str, Any]]  # one row per env step, in step order

    def series(self, keys: Iterable[str]) -> dict[str, list[float]]:
        """``key -> values in step order`` for each key some row reported (NaN where a row has none)."""
        return {key: [as_number(row.get(key)) for row in self.steps] for key in keys if any(key in row for row in self.steps)}


def reported_history(rows: Sequence[Mapping[str, Any]], *, errored: bool) -> ReportedHistory:
    """How a trial ended and its curve, from its rows in the order they were written.

    The row written last says how the trial ended (rows before it carry an empty reason), even
    where a retry stopped it at a step before one its first attempt had reached. A trial that
    failed past its retries (``errored``) is an error unless that row says it had ended: a
    population's member that stopped or completed before another failed the trial. A restored
    trial reports again from its checkpoint's step: the later row of a step is the one kept.
    (``study.run``'s table reads Tune's ResultGrid and ``analysis.load`` the Tune folder; both
    call this, so they agree on every trial.)
    """
    last = rows[-1] if rows else {}
    reason = last.get(STOP_REASON)
    reason = reason if isinstance(reason, str) and reason else None
    if errored and reason is None:
        reason = "error"
    # Later rows overwrite earlier ones; a row without a step (none is reported so) is no point of the curve.
    by_step = {row[m.ENV_STEPS]: row for row in rows if math.isfinite(as_number(row.get(m.ENV_STEPS)))}
    return ReportedHistory(last=last, stop_reason=reason, steps=[by_step[step] for step in sorted(by_step)])


def as_number(value: Any) -> float:
    """A result field or MLflow tag as a number; NaN for absent, None, "" or "None"."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def summary_from_metrics(metrics: Mapping[str, float], *, stop_reason: str | None, stop_step: Any) -> TrialSummary | None:
    """A summary read back from an MLflow run's ``summary/*`` metrics; None if it has none."""
    if SUMMARY_PREFIX + "env_steps" not in metrics:
        return None
    values = {key: metrics.get(SUMMARY_PREFIX + key, math.nan) for key in SUMMARY_FIGURES}
    values["env_steps"] = int(values["env_steps"])
    step = decode_param(stop_step) if isinstance(stop_step, str) else stop_step
    return TrialSummary(**values, stop_reason=stop_reason or None,
                        stop_step=int(step) if isinstance(step, (int, float)) and math.isfinite(step) else None)


def lift_nested_arm_runs(client: Any, run_ids: Iterable[str]) -> None:
    """Make arm runs an earlier version nested under their study run top level (their ``PARENT``
    tag removed): MLflow's runs table folds a nested run under a collapsed parent row."""
    for run_id in run_ids:
        if PARENT in client.get_run(run_id).data.tags:
            client.delete_tag(run_id, PARENT)
