"""MLflow from the study driver: a run per study, a run per arm, one per trial nested under its arm.

Ray's own MLflow callback makes one flat run per trial and logs each metric with its own call;
on SQLite 1,000 ``log_metric`` calls take about 23 s against 0.1 s for one ``log_batch`` of 1,000,
and a report carries ~50 metrics. So this callback groups runs (arm -> trial, as the analysis and
the MLflow UI compare them) and writes each report with a single ``log_batch``.
It runs in the driver only: one writer, no SQLite lock fights between trial processes.

Arm runs are top-level runs tied to their study by the tag ``study.run_id``, not nested under the
study run: MLflow's UI folds nested runs under a collapsed parent, and the arms side by side are
what a study is opened for. Their aggregates and the report come at the study's end
(``analysis.publish``). The experiment is tagged ``mlflow.experimentKind`` =
``custom_model_development``: model training, not a GenAI app.

A population trial (``execution: population``) reports each member's report as its own result,
naming its seed: each member gets the run its single trial would have (tag ``trial_id`` =
``<Tune trial id>-s<seed>``), so MLflow and the analysis see the same seed runs either way.

Layout (``study.results``, the results contract): tags ``study.role`` (study | arm | trial),
``arm``, ``seed``, ``trial_id``, ``stop_reason``, ``stop_step``; params are the factor levels under
their TD3 names, plus, for a trial, ``seed`` and the whole TD3 config as ``agent.<field>``, as
JSON text; metrics use the DESIGN.md names with ``step=env_steps``; a trial ends with its
``summary/*`` metrics (``study.results.summarize``) and the artifacts ``config.json`` and
``summary.json``.

A resumed study reuses its runs: arms and trials are found again by their tags, so a trial that
continues from a checkpoint keeps logging into the run that holds its first steps.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH
from ray import tune

from study import metrics as m
from study import results as r
from study.plan import POPULATION, TrialPlan, member_id, members_of, regime_steps
from study.spec import StudySpec

if TYPE_CHECKING:
    from ray.tune.experiment import Trial


# --------------------------------------------------------------------------------------------
# Pure: what gets logged
# --------------------------------------------------------------------------------------------


def report_metrics(result: dict[str, Any], timestamp_ms: int) -> list[Metric]:
    """Every DESIGN.md metric of a Tune result, at ``step=env_steps`` (NaN kept: it is data)."""
    step = int(result[m.ENV_STEPS])
    return [Metric(key, float(result[key]), timestamp_ms, step) for key in m.REPORT_KEYS if key in result]


def encoded_params(prefix: str, values: dict[str, Any]) -> dict[str, str]:
    """``{prefix}.{key}`` -> the value as JSON text (``r.encode_param``), mappings flattened with dots."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(encoded_params(name, value))
        else:
            flat[name] = r.encode_param(value)
    return flat


def values_by_step(history: list[Metric]) -> list[float]:
    """A metric's values in step order. A trial retried or resumed from a checkpoint logs again the
    steps after it: the later value wins, so abandoned steps never reach the summary."""
    latest = {point.step: point.value for point in sorted(history, key=lambda point: point.timestamp)}
    return [latest[step] for step in sorted(latest)]


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]


# --------------------------------------------------------------------------------------------
# I/O: the study's runs
# --------------------------------------------------------------------------------------------


def open_experiment(client: MlflowClient, name: str, artifact_root: Path | None) -> str:
    """The study's experiment id, created on first use (artifacts under ``artifact_root``), tagged
    as model development (``r.EXPERIMENT_KIND``) whether it is new or an older study's."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = artifact_root.resolve().as_uri() if artifact_root is not None else None
        return client.create_experiment(name, artifact_location=location, tags={r.EXPERIMENT_KIND: r.MODEL_DEVELOPMENT})
    if experiment.tags.get(r.EXPERIMENT_KIND) != r.MODEL_DEVELOPMENT:
        client.set_experiment_tag(experiment.experiment_id, r.EXPERIMENT_KIND, r.MODEL_DEVELOPMENT)
    return experiment.experiment_id


def create_study_run(client: MlflowClient, experiment_id: str, spec: StudySpec, *, smoke: bool) -> str:
    """The parent run of one ``study.run`` invocation (a resumed study reuses it)."""
    run = client.create_run(
        experiment_id,
        run_name=spec.name + (" (smoke)" if smoke else ""),
        tags={r.ROLE: "study", r.STUDY_NAME: spec.name, r.STUDY_DESIGN: spec.design, r.STUDY_SMOKE: str(smoke).lower()},
    )
    params = {key: r.encode_param(value) for key, value in
              {"env": spec.env, "steps": spec.budget.steps, "design": spec.design, "seeds": spec.seeds}.items()}
    params |= encoded_params("steps", regime_steps(spec))
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
    if spec.reference:  # the published returns the report shows beside the measured ones
        client.log_dict(run.info.run_id, [ref.model_dump(mode="json") for ref in spec.reference], r.REFERENCE_FILE)
    return run.info.run_id


class MlflowStudyCallback(tune.Callback):
    """Log a study into MLflow, nested and batched (see the module docstring)."""

    def __init__(self, spec: StudySpec, tracking_uri: str, study_run_id: str) -> None:
        self._spec = spec
        self._tracking_uri = tracking_uri
        self._study_run_id = study_run_id
        self._client: MlflowClient | None = None
        self._experiment_id = ""
        self._arm_runs: dict[str, str] = {}
        self._trial_runs: dict[str, str] = {}  # member id (study.plan.member_id) -> run id
        self._plans: dict[str, dict[int, TrialPlan]] = {}  # Tune trial id -> seed -> plan

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with the experiment; a client and run ids are looked up again.
        return {**self.__dict__, "_client": None, "_arm_runs": {}, "_trial_runs": {}, "_plans": {}}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self._tracking_uri)
            self._experiment_id = self._client.get_run(self._study_run_id).info.experiment_id
        return self._client

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None, **info: Any) -> None:
        # A resumed study continues its run, whatever status the interrupted driver left.
        self.client.update_run(self._study_run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        r.lift_nested_arm_runs(self.client, self._known_runs("arm"))

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        for seed in self._members(trial):
            self._trial_run(trial, seed)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        # A population trial's results name their member; a single trial's seed is its plan's.
        seed = int(result[r.SEED]) if POPULATION in trial.config else next(iter(self._members(trial)))
        run_id = self._trial_run(trial, seed)
        for batch in _batches(report_metrics(result, _now_ms()), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=batch)
        if result.get(r.STOP_REASON):
            self._finish(trial, seed, result[r.STOP_REASON], int(result[r.STOP_STEP]), result)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        # A population's members that had already ended are not retried: they keep no retry count.
        for seed in self._members(trial):
            run_id = self._trial_run(trial, seed)
            if not self._ended(run_id):
                self.client.set_tag(run_id, r.RETRIES, str(trial.num_failures))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        """The trial failed past its retries: each of its runs without an outcome is filed as
        ``error`` (a population's members that had stopped or completed keep theirs)."""
        for seed in self._members(trial):
            run = self.client.get_run(self._trial_run(trial, seed))
            if self._ended(run.info.run_id):
                continue
            steps = int(run.data.metrics.get(m.ENV_STEPS, 0))  # the last step this seed reported
            self._finish(trial, seed, "error", steps, {**(trial.last_result or {}), m.ENV_STEPS: steps})

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        finished = RunStatus.to_string(RunStatus.FINISHED)
        for run_id in [*self._known_runs("arm"), self._study_run_id]:
            self.client.set_terminated(run_id, finished)

    # -- runs ---------------------------------------------------------------------------------

    def _find(self, role: str, **tags: str) -> str | None:
        filters = [f"tags.`{r.ROLE}` = '{role}'", f"tags.`{r.STUDY_RUN}` = '{self._study_run_id}'"]
        filters += [f"tags.`{key}` = '{value}'" for key, value in tags.items()]
        runs = self.client.search_runs([self._experiment_id], " and ".join(filters), max_results=1)
        return runs[0].info.run_id if runs else None

    def _known_runs(self, role: str) -> list[str]:
        query = f"tags.`{r.ROLE}` = '{role}' and tags.`{r.STUDY_RUN}` = '{self._study_run_id}'"
        return [run.info.run_id for run in self.client.search_runs([self._experiment_id], query, max_results=10_000)]

    def _ended(self, run_id: str) -> bool:
        """Whether a seed's run has its outcome: any but ``error``, which a resumed trial may replace."""
        return self.client.get_run(run_id).data.tags.get(r.STOP_REASON) not in (None, "error")

    def _members(self, trial: Trial) -> dict[int, TrialPlan]:
        """The trial's plans by seed: one, or a population's members."""
        if trial.trial_id not in self._plans:
            self._plans[trial.trial_id] = {plan.seed: plan for plan in members_of(self._spec, trial.config)}
        return self._plans[trial.trial_id]

    def _arm_run(self, plan: TrialPlan) -> str:
        if plan.arm not in self._arm_runs:
            run_id = self._find("arm", **{r.ARM: plan.arm})
            if run_id is None:
                tags = {r.ROLE: "arm", r.ARM: plan.arm, **_regime_tag(plan)}
                run_id = self._create(plan.arm, tags)  # top level: see the module docstring
                self._log_params(run_id, encoded_params("", plan.levels))  # an arm run's params are its factors (analysis.load)
            self._arm_runs[plan.arm] = run_id
        return self._arm_runs[plan.arm]

    def _trial_run(self, trial: Trial, seed: int) -> str:
        """The run of one seed of a Tune trial (a population's member is filed as its own trial)."""
        key = member_id(trial.trial_id, trial.config, seed)
        if key not in self._trial_runs:
            plan = self._members(trial)[seed]
            run_id = self._find("trial", **{r.TRIAL_ID: key})
            if run_id is None:
                tags = {r.ROLE: "trial", r.ARM: plan.arm, r.SEED: str(plan.seed), r.TRIAL_ID: key, **_regime_tag(plan)}
                run_id = self._create(r.trial_run_name(plan.arm, plan.seed), {**tags, r.PARENT: self._arm_run(plan)})
                params = {
                    **encoded_params("", plan.levels),
                    r.SEED: r.encode_param(plan.seed),
                    "steps": r.encode_param(plan.config.steps),  # its regime's budget, where regimes have their own
                    **encoded_params("agent", plan.config.agent.model_dump(mode="json")),
                    **encoded_params("env", plan.config.env_settings),
                }
                self._log_params(run_id, params)
            self._trial_runs[key] = run_id
        return self._trial_runs[key]

    def _create(self, name: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(self._experiment_id, run_name=name, tags={**tags, r.STUDY_RUN: self._study_run_id})
        return run.info.run_id

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        items = [Param(key, value) for key, value in params.items()]
        for batch in _batches(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=batch)

    def _finish(self, trial: Trial, seed: int, reason: str, stop_step: int, result: dict[str, Any]) -> None:
        """Tags, ``summary/*`` metrics and artifacts of a trial's outcome; the run ends.

        The summary is computed here, in the driver, because a trial stopped by the scheduler
        never returns its own; from the logged history, so a retried trial's abandoned steps
        never reach it.
        """
        run_id = self._trial_run(trial, seed)
        plan = self._members(trial)[seed]
        history = {key: values_by_step(self.client.get_metric_history(run_id, key)) for key in r.CURVE_KEYS}
        env_steps = int(result.get(m.ENV_STEPS, stop_step) or 0)
        summary = r.summarize(history, env_steps=env_steps, stop_reason=reason, stop_step=stop_step)
        now = _now_ms()
        metrics = [Metric(key, value, now, env_steps) for key, value in summary.metrics().items()]
        tags = [RunTag(r.STOP_REASON, reason), RunTag(r.STOP_STEP, str(stop_step))]
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        config = plan.config.model_dump(mode="json")
        self.client.log_dict(run_id, config, r.CONFIG_FILE)
        # Tune's time for the trial so far: for a population member, its population's (shared with the others).
        wall_time_s = round(float(result.get("time_total_s", 0.0) or 0.0), 3)
        document = {"arm": plan.arm, "seed": plan.seed, **summary.as_json(), "wall_time_s": wall_time_s, "config": config}
        self.client.log_dict(run_id, document, r.SUMMARY_FILE)
        status = RunStatus.FAILED if reason == "error" else RunStatus.FINISHED
        self.client.set_terminated(run_id, RunStatus.to_string(status))


def _regime_tag(plan: TrialPlan) -> dict[str, str]:
    return {r.REGIME: plan.regime} if plan.regime is not None else {}


def _now_ms() -> int:
    return int(time.time() * 1000)
