"""A study's aggregates and report, written back into its MLflow store, so that the MLflow UI
compares arms as the report does.

The driver logs every seed's curves while trials run, but an arm's figures (explosion rate, return
at the common step, with their intervals) need all its seeds, so they come at the end: ``python -m
study.run`` loads the finished study (``analysis.load``), writes the report
(``analysis.report.write_report``) and calls ``publish``; ``python -m analysis.report`` does the same.
Nothing here computes a statistic: the arm figures are ``tables.ablation_table``'s (the intervals of
``analysis.stats``), the numbers of the report's "Ablation per arm" table.

What ``publish`` writes:

- each arm run: ``arm/*`` metrics at step 0 (``ARM_FIGURES``) and ``seed_mean/*`` curves at
  step = env step (``seed_mean_curves``); the seed runs keep their own curves;
- the study run: the report's files under the artifact folder ``report/``, report.html with its
  figures inlined (MLflow shows an HTML artifact from a blob URL, where a relative image path
  leads nowhere);
- the experiment: a shared view of the runs table (tag ``mlflow.sharedViewState.<study run id>``:
  the study's arms with these columns, in the order they started) and, unless someone else wrote
  it, the description above that table, linking the view and the report.

MLflow 3.17's UI decides between its GenAI pages and its runs table by a workflow switch (the
``workflowType`` URL parameter, else the browser's last choice, GenAI at first), not by the
experiment's ``mlflow.experimentKind`` tag (which ``study.mlflow_logging`` sets all the same), so
``runs_page_url`` carries ``workflowType=machine_learning``.

Publishing again (the report made again, a resumed study) logs only values that changed: the
histories do not grow with every call.
"""

from __future__ import annotations

import base64
import json
import math
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_METRICS_PER_BATCH

from analysis import stats, tables
from analysis.load import MlflowRuns, StudyResults
from study import metrics as m
from study import results as r

# arm/<name> -> the ablation_table column it holds (counts and rates of explosions by the horizon,
# the return at the step common to every arm of its regime, so that a column compares the arms:
# 95% intervals, Wilson for the rate, Student-t for the mean).
ARM_DIGITS = 4  # significant digits of the arm/* figures on the arm runs (see arm_metrics)
ARM_FIGURES: dict[str, str] = {
    "seeds": "n_seeds",
    "exploded": "exploded",
    "observed": "observed",
    "censored": "censored",
    "explosion_horizon": "horizon",
    "explosion_rate": "explosion_rate",
    "explosion_rate_low": "explosion_rate_low",
    "explosion_rate_high": "explosion_rate_high",
    "median_explosion_step": "median_explosion_step",
    "common_step": "shared_step",
    "return_mean": "shared_return_mean",
    "return_mean_low": "shared_return_mean_low",
    "return_mean_high": "shared_return_mean_high",
}
# The columns of the shared view, left to right: what a person compares arms by, first.
VIEW_FIGURES = ("seeds", "explosion_rate", "explosion_rate_low", "explosion_rate_high", "return_mean", "return_mean_low",
                "return_mean_high", "common_step", "median_explosion_step", "exploded", "observed")  # fmt: skip
SEED_MEAN_KEYS = (m.ACTOR_Q_MAX, m.Q1_VALUE, m.EVAL_RETURN)
SEEDS = "seeds"  # seed_mean/seeds: how many of the arm's seeds reported at that step
REPORT_HTML = "report.html"
# What analysis.report.write_report writes, and all that goes to the study run: a report folder a
# person chose (``--out``) may hold other files.
REPORT_FILES = (REPORT_HTML, "report.md", "actor_q.png", "returns.png", "explosion.png", "trials.csv", "ablation.csv")
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # + key: a runs-table view the UI opens by ?viewStateShareKey=key
NOTE_TAG = "mlflow.note.content"  # an experiment's description, Markdown, shown above its runs table
NOTE_MARK = "<!-- analysis.publish -->"  # a description this module wrote, and may write again
DEFAULT_UI = "http://127.0.0.1:5000"  # where ``mlflow ui`` serves by default
MODEL_TRAINING_PAGES = "workflowType=machine_learning"  # the UI's switch to its runs pages (module docstring)
CELL_PX_PER_CHAR, CELL_PADDING_PX = 7, 32  # a runs-table column wide enough for its text (MLflow 3.17's font)
RUN_NAME_COLUMN = "attributes.`Run Name`"  # the UI's id of its pinned run-name column (190 px unless told)
RUN_NAME_EXTRA_PX = 56  # beside a run's name: its colour dot, a parent's expander, a seed run's indent


# --- pure: what gets written -------------------------------------------------------------------


def arm_metrics(row: Mapping[str, float]) -> dict[str, float]:
    """An ``ablation_table`` row as the arm run's ``arm/*`` metrics (NaN kept: no interval with one
    seed, no median step where nothing exploded), to ``ARM_DIGITS`` significant digits (``shown_figure``): MLflow's
    runs table writes a value out in full (0.5614970317550455), which widens every column past the
    screen; the report's CSVs keep every digit."""
    return {r.ARM_PREFIX + name: shown_figure(float(row[column])) for name, column in ARM_FIGURES.items()}


def shown_figure(value: float) -> float:
    """``value`` to ``ARM_DIGITS`` significant digits, its integer part whole (a step count, 123,456,
    stays exact); 0, NaN and infinities as they are."""
    if not math.isfinite(value) or value == 0:
        return value
    return round(value, max(0, ARM_DIGITS - 1 - math.floor(math.log10(abs(value)))))


def seed_mean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Per (arm, env step): the mean over the arm's seeds of actor-path Q max and buffer Q at each
    report and of the evaluation return where evaluations ran (``stats.evaluations``: not the
    copies later reports carry), and ``seeds``, how many seeds reported there, which falls as seeds
    stop. A non-finite value (the report that stopped a non-finite trial) is left out of its mean."""
    reports = curves.replace([math.inf, -math.inf], math.nan)
    by_step = reports.groupby(["arm", m.ENV_STEPS])
    q = by_step[[m.ACTOR_Q_MAX, m.Q1_VALUE]].mean()
    evaluated = stats.evaluations(reports)[0].groupby(["arm", m.ENV_STEPS])[m.EVAL_RETURN].mean()
    return q.join(evaluated, how="outer").assign(**{SEEDS: by_step["seed"].nunique()})[[*SEED_MEAN_KEYS, SEEDS]]


def curve_metrics(means: pd.DataFrame, timestamp_ms: int) -> list[Metric]:
    """One arm's ``seed_mean_curves`` rows (indexed by env step) as ``seed_mean/*`` metric points;
    a step without a value (no evaluation there) has no point."""
    return [Metric(r.SEED_MEAN_PREFIX + key, float(value), timestamp_ms, int(step))
            for key in means.columns for step, value in means[key].items() if math.isfinite(value)]  # fmt: skip


def new_points(wanted: list[Metric], stored: Mapping[tuple[str, int], float]) -> list[Metric]:
    """The points of ``wanted`` whose (key, step) holds no value yet or another one (NaN equals NaN),
    so that publishing twice logs nothing the second time."""

    def same(a: float, b: float) -> bool:
        return a == b or (math.isnan(a) and math.isnan(b))

    return [p for p in wanted if (p.key, p.step) not in stored or not same(stored[p.key, p.step], p.value)]


def runs_view(study_run_id: str, arm_figures: Mapping[str, Mapping[str, float]], run_names: Iterable[str]) -> dict[str, object]:
    """The runs-table view state MLflow's UI restores from a shared-view tag: the study's arm and seed
    runs (seeds fold under their arm), in the order the arms started, with the ``VIEW_FIGURES``
    columns, each as wide as its name and the arms' values in it (``arm_figures``: arm -> its
    ``arm_metrics``), which the UI writes out in full, and the run-name column as wide as the longest
    of ``run_names`` (at its default width ``regime/arm`` names lose the arm, which tells them apart)."""
    keys = [r.ARM_PREFIX + name for name in VIEW_FIGURES]
    columns = [f"metrics.`{key}`" for key in keys]

    def width(key: str) -> int:
        longest = max([len(key), *(len(_as_the_ui_writes(figures[key])) for figures in arm_figures.values())])
        return CELL_PADDING_PX + CELL_PX_PER_CHAR * longest

    name_width = CELL_PADDING_PX + RUN_NAME_EXTRA_PX + CELL_PX_PER_CHAR * max(map(len, run_names), default=0)
    return {
        "searchFilter": f"tags.`{r.STUDY_RUN}` = '{study_run_id}'",
        "orderByKey": "attributes.start_time",
        "orderByAsc": True,
        "selectedColumns": columns,
        # The UI applies a width only to a column named in the order.
        "columnOrder": [RUN_NAME_COLUMN, *columns],
        "columnWidths": {RUN_NAME_COLUMN: name_width, **{column: width(key) for column, key in zip(columns, keys, strict=True)}},
    }


def _as_the_ui_writes(value: float) -> str:
    """A metric's value as MLflow's UI shows it (JavaScript's shortest round-trip text: 2, not 2.0)."""
    return "NaN" if math.isnan(value) else str(int(value)) if value.is_integer() else repr(value)


def runs_page_route(experiment_id: str, study_run_id: str) -> str:
    """The UI route of the study's shared runs view, on MLflow's runs table (not its GenAI pages)."""
    return f"#/experiments/{experiment_id}/runs?{MODEL_TRAINING_PAGES}&viewStateShareKey={study_run_id}"


def runs_page_url(tracking_uri: str, experiment_id: str, study_run_id: str) -> str:
    """Where a person opens the arms side by side: the tracking server itself, or ``mlflow ui``'s
    default address for a store it serves (``sqlite:``, a folder)."""
    base = tracking_uri if tracking_uri.startswith(("http://", "https://")) else DEFAULT_UI
    return f"{base.rstrip('/')}/{runs_page_route(experiment_id, study_run_id)}"


def how_to_open(tracking_uri: str, arms_url: str | None) -> list[str]:
    """The lines a console prints to open the study in MLflow: the ``mlflow ui`` command for a store it
    serves, then the arms' URL (``publish``'s; None when publishing failed: the command alone)."""
    if tracking_uri.startswith(("http://", "https://")):
        return [f"MLflow: {arms_url or tracking_uri}"]
    beside = Path(sys.executable).with_name("mlflow")  # the environment's own mlflow (.venv/bin/mlflow)
    lines = [f"MLflow: {beside if beside.exists() else 'mlflow'} ui --backend-store-uri {tracking_uri}"]
    if arms_url:
        lines.append(f"        then open {arms_url} (the arms side by side, the report linked above them)")
    return lines


def report_route(experiment_id: str, study_run_id: str) -> str:
    """The UI route showing the study run's report.html, in the UI's model-training pages."""
    path = f"#/experiments/{experiment_id}/runs/{study_run_id}/artifactPath/{r.REPORT_ARTIFACTS}/{REPORT_HTML}"
    return f"{path}?{MODEL_TRAINING_PAGES}"


def experiment_note(study: str, experiment_id: str, study_run_id: str, report_uploaded: bool = True) -> str:
    """The experiment's description: where the arms and the report are, one click each (a report
    whose upload failed is named as missing, not linked)."""
    arms = f"[the arms side by side]({runs_page_route(experiment_id, study_run_id)}) (95% intervals; seeds fold under their arm)"
    if report_uploaded:
        report = f"[the report]({report_route(experiment_id, study_run_id)}) (verdicts, tables, plots, CSVs)"
    else:
        report = "the report is not here (its upload failed): it is in the study's report folder"
    return "\n".join([NOTE_MARK, f"**Study `{study}`**: {arms} · {report}"])


def inline_images(html: str, images: Mapping[str, bytes]) -> str:
    """``html`` with each ``src="NAME"`` of ``images`` replaced by the image as a data URI."""

    def data_uri(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in images:
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(images[name]).decode("ascii")}"'

    return re.sub(r'src="([^"]+)"', data_uri, html)


# --- I/O ---------------------------------------------------------------------------------------


def publish(results: StudyResults, report_dir: Path | str) -> str | None:
    """Write the arms' aggregates and the report in ``report_dir`` into the study's MLflow store (see
    the module docstring); returns the URL of the arms side by side (``runs_page_url``), or None for
    a study read from a Tune folder (no store to write to). The report goes last: when its upload
    fails, a line says so and the arms are there all the same."""
    runs = results.mlflow
    if runs is None:
        return None
    client = MlflowClient(runs.tracking_uri)
    r.lift_nested_arm_runs(client, runs.arm_runs.values())  # a store an earlier version wrote
    table = tables.ablation_table(results.trials, results.curves)
    # An arm run whose trials never started has no row.
    figures = {arm: arm_metrics(table.loc[arm]) for arm in runs.arm_runs if arm in table.index}
    _log_arms(client, runs, figures, seed_mean_curves(results.curves))
    names = [*figures, *(r.trial_run_name(arm, seed) for arm, seed in results.trials[["arm", "seed"]].itertuples(index=False))]
    view = runs_view(runs.study_run_id, figures, names)
    client.set_experiment_tag(runs.experiment_id, SHARED_VIEW_TAG + runs.study_run_id, json.dumps(view))
    try:
        _log_report(client, runs.study_run_id, Path(report_dir))
        report_uploaded = True
    except Exception as error:  # an artifact store that refuses: the arms above stand without the report
        print(f"MLflow: could not upload the report to the study run: {one_line(error)}")
        report_uploaded = False
    note = client.get_experiment(runs.experiment_id).tags.get(NOTE_TAG)
    if note is None or note.startswith(NOTE_MARK):  # never overwrite a description a person wrote
        note = experiment_note(results.name, runs.experiment_id, runs.study_run_id, report_uploaded)
        client.set_experiment_tag(runs.experiment_id, NOTE_TAG, note)
    return runs_page_url(runs.tracking_uri, runs.experiment_id, runs.study_run_id)


def publish_or_say(results: StudyResults, report_dir: Path | str) -> str | None:
    """``publish``, for a caller whose own work is done (the trials ran, the report is written): a
    store that cannot be written to gets one line saying why, and None."""
    try:
        return publish(results, report_dir)
    except Exception as error:
        print(f"MLflow: could not finish publishing the study there: {one_line(error)}")
        return None


def one_line(error: Exception) -> str:
    """An error as one console line: its type and its message with the line breaks folded."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _log_arms(client: MlflowClient, runs: MlflowRuns, figures: Mapping[str, Mapping[str, float]], means: pd.DataFrame) -> None:
    """Each arm run's figures (at step 0) and mean curves: the points its history does not hold as they are."""
    curved = set(means.index.get_level_values("arm"))
    now = int(time.time() * 1000)
    for arm, arm_figures in figures.items():
        run_id = runs.arm_runs[arm]
        points = [Metric(key, value, now, 0) for key, value in arm_figures.items()]
        points += curve_metrics(means.loc[arm], now) if arm in curved else []
        points = new_points(points, _stored(client, run_id, {point.key for point in points}))
        for start in range(0, len(points), MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=points[start : start + MAX_METRICS_PER_BATCH])


def _stored(client: MlflowClient, run_id: str, keys: set[str]) -> dict[tuple[str, int], float]:
    """(key, step) -> the value a run holds there, the latest logged (as ``values_by_step`` reads it)."""
    stored = {}
    for key in keys:
        for point in sorted(client.get_metric_history(run_id, key), key=lambda point: point.timestamp):
            stored[key, point.step] = point.value
    return stored


def _log_report(client: MlflowClient, study_run_id: str, report_dir: Path) -> None:
    files = [report_dir / name for name in REPORT_FILES if (report_dir / name).is_file()]
    images = {path.name: path.read_bytes() for path in files if path.suffix == ".png"}
    with tempfile.TemporaryDirectory() as staging:
        for path in files:
            copy = Path(staging) / path.name
            if path.name == REPORT_HTML:
                copy.write_text(inline_images(path.read_text(encoding="utf-8"), images), encoding="utf-8")
            else:
                copy.write_bytes(path.read_bytes())
        client.log_artifacts(study_run_id, staging, r.REPORT_ARTIFACTS)
