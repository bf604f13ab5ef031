"""Run a whole study as parallel Ray Tune trials: ``python -m study.run [--space NAME|PATH] ...``.

    python -m study.run                       # search_spaces/default.yaml on this machine
    python -m study.run --smoke               # the same study, shrunk by its ``smoke`` section
    python -m study.run --resume              # continue a killed or interrupted study
    python -m study.run --space carla_ablation --address auto --storage /mnt/shared/results \\
        --tracking-uri http://HEAD:5000       # on the cluster of cluster.yaml

The study file is validated before Ray starts. Results: Tune's folders under
``<storage>/<study name>/``, MLflow runs (a study run; arm runs with their seeds' runs under them) in
``sqlite:///<storage>/mlflow.db`` unless ``--tracking-uri`` says otherwise, and at the end a table of
every arm and seed, the verdicts, the report (``analysis.report``'s files, also on the MLflow study
run, with each arm's aggregates on its run) and the URL that shows the arms side by side in MLflow.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from mlflow.tracking import MlflowClient
from pydantic import ValidationError
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from rich.console import Console
from rich.table import Table

from analysis.load import StudyResults, load_study
from analysis.publish import how_to_open, one_line, publish_or_say
from analysis.report import REPORT_DIR, write_report
from analysis.verdicts import verdict_line
from analysis.tables import arm_comparisons, missing_baselines, no_baseline_ran
from envs import needs_server
from study import metrics as m
from study import results as r
from study.guard import GUARD_STOPS
from study.mlflow_logging import MlflowStudyCallback, create_study_run, open_experiment
from study.plan import BASELINE, POPULATION, TrialPlan, expand, member_id, members_of, regime_steps
from study.scheduler import QGuardScheduler, StopReasonCallback
from study.search import search
from study.spec import SpecError, StudySpec, load_spec
from study.tensorboard_logging import TensorBoardCallback
from study.trainable import make_trainable
from study.tune_logs import PersistResultFiles

PROGRESS_SECONDS = 30.0  # how often the console says where the running trials are


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m study.run",
        description="Run a TD3 ablation or tuning study on Ray Tune, with the Q-guarded ASHA and MLflow.",
    )
    parser.add_argument("--space", default="default", help="study file: a name in search_spaces/ or a path")
    parser.add_argument("--storage", type=Path, default=None, help="results root (default: the file's storage, ./results)")
    parser.add_argument("--address", default=None, help="Ray cluster address ('auto' on a cluster node); default: local")
    parser.add_argument("--resume", action="store_true", help="continue the study in STORAGE; finished trials are kept")
    parser.add_argument("--smoke", action="store_true", help="apply the study file's 'smoke' overrides (CI-sized)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///STORAGE/mlflow.db)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = load_spec(args.space, smoke=args.smoke)
        storage = (args.storage or Path(spec.storage)).resolve()
        state = read_state(storage / spec.name, spec, resume=args.resume)
        tracking_uri = args.tracking_uri or spec.tracking_uri or r.default_tracking_uri(storage)
        if state and state["tracking_uri"] != tracking_uri:
            raise SpecError(f"--resume: the study logs to {state['tracking_uri']}, not {tracking_uri}")
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    init_ray(args.address)
    try:
        results = run_study(spec, storage, tracking_uri, state, smoke=args.smoke)
    finally:
        ray.shutdown()

    outcomes = collect_outcomes(spec, results)
    print_table(spec, outcomes)
    study_results = read_back(spec, storage, tracking_uri)
    print_verdicts(spec, study_results, storage)
    arms_url = publish_report(spec, study_results, storage)
    print("\n" + "\n".join(how_to_open(tracking_uri, arms_url)))
    print(f"Tune results: {storage / spec.name}")
    print(f"TensorBoard: tensorboard --logdir {storage / spec.name}")
    errors = [o for o in outcomes if o.summary.stop_reason == "error"]
    unfinished = [o for o in outcomes if not o.summary.stop_reason]
    if unfinished:
        print(f"{len(unfinished)} trial(s) did not finish: continue with the same command and --resume")
    return 1 if errors or unfinished else 0


def read_state(experiment_dir: Path, spec: StudySpec, *, resume: bool) -> dict[str, Any]:
    """What an earlier run of this study left (for ``--resume``); refuse to mix two studies."""
    state_file = experiment_dir / r.STATE_FILE
    if not resume:
        if experiment_dir.exists():
            raise SpecError(f"{experiment_dir} already holds study {spec.name!r}: add --resume to continue it, "
                            "or pass another --storage")
        return {}
    if not state_file.is_file():
        raise SpecError(f"--resume: no study to continue at {experiment_dir} (no {r.STATE_FILE})")
    state = json.loads(state_file.read_text())
    current = spec.model_dump(mode="json")
    try:
        # A key the schema gained since the study started (regimes, reference, a regime's budget)
        # reads as its default, at any depth.
        started = StudySpec.model_validate(state["spec"]).model_dump(mode="json")
    except ValidationError:  # then compared as written, top-level keys the file gained at their defaults
        gained = current.keys() - state["spec"].keys()
        started = {**{k: StudySpec.model_fields[k].get_default(call_default_factory=True) for k in gained}, **state["spec"]}
    if started != current:
        changed = sorted(k for k, v in current.items() if started.get(k) != v)
        raise SpecError(f"--resume: the study file changed since the study started (keys {changed}); "
                        "resume with the file (and --smoke) it started with")
    return state


def init_ray(address: str | None) -> None:
    """Local Ray on every core, dashboard off (it needs ray[default]); or join a cluster."""
    if address:
        ray.init(address=address)
    else:
        # The cores this process may use (taskset, container limits), not the machine's count.
        ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, dashboard_host="127.0.0.1")


def run_study(spec: StudySpec, storage: Path, tracking_uri: str, state: dict[str, Any], *, smoke: bool) -> Any:
    """Start (or continue) the Tune experiment, with MLflow's study run made first."""
    # Tune adds CSV, JSON and TensorBoard loggers unless told not to: the study passes the first
    # two itself and its own TensorBoardCallback instead of Tune's ``ray/tune/``-prefixed one.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    experiment_dir = storage / spec.name
    study_run_id = state.get("study_run_id")
    if study_run_id is None:
        client = MlflowClient(tracking_uri)
        artifact_root = storage / "mlartifacts" if tracking_uri.startswith("sqlite:") else None
        experiment_id = open_experiment(client, spec.name, artifact_root)
        study_run_id = create_study_run(client, experiment_id, spec, smoke=smoke)
        experiment_dir.mkdir(parents=True, exist_ok=True)
        state = {"spec": spec.model_dump(mode="json"), "study_run_id": study_run_id, "tracking_uri": tracking_uri}
        (experiment_dir / r.STATE_FILE).write_text(json.dumps(state, indent=2))

    trainable = make_trainable(spec)
    if tune.Tuner.can_restore(str(experiment_dir)):
        # Unfinished trials continue from their last checkpoints; errored ones get their retries.
        tuner = tune.Tuner.restore(str(experiment_dir), trainable, resume_unfinished=True, resume_errored=True)
        return tuner.fit()

    scheduler = QGuardScheduler(
        spec.guard,
        max_t=spec.budget.steps,
        asha=bool(spec.scheduler.asha),
        grace_period=spec.scheduler.grace_period or spec.budget.steps,  # read only when ASHA prunes
        reduction_factor=spec.scheduler.reduction_factor,
    )
    param_space, search_alg, num_samples = search(spec)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=m.EVAL_RETURN,
            mode="max",
            scheduler=scheduler,
            search_alg=search_alg,
            num_samples=num_samples,
            max_concurrent_trials=spec.max_concurrent_trials,
            trial_dirname_creator=TrialFolders(spec),
            # A finished trial's process runs the next one (Tune resets its working directory and
            # session): each new process costs seconds of imports (torch, and torch._dynamo at the
            # first optimizer). Nothing a trial computes is global: its seeds, RNG streams and torch
            # settings are its own (study.trial), so results are the same. Not for CARLA: a trial
            # the scheduler stopped releases its server slot only when its process is reused or
            # ends, and stopping a server can take longer than Tune waits at a reuse (trainable.py).
            reuse_actors=not needs_server(spec.env),
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str(storage),
            callbacks=[
                StopReasonCallback(scheduler),
                MlflowStudyCallback(spec, tracking_uri, study_run_id),
                TensorBoardCallback(),
                CSVLoggerCallback(),
                JsonLoggerCallback(),
                PersistResultFiles(),
                ConsoleProgress(spec),
            ],
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,  # Tune's per-result boxes (~60 metrics each) drown the outcomes; ConsoleProgress says those
        ),
    )
    return tuner.fit()


def folder_name(arm: str) -> str:
    """An arm's name as a trial folder's (and its TensorBoard run's) prefix: ``regime/arm`` -> ``regime_arm``."""
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", arm)[:80]


class TrialFolders:
    """Tune's ``trial_dirname_creator``: each trial's folder (and TensorBoard run) named by arm and
    seed, e.g. ``tau=0.02_seed1_5f3a2_00004``, instead of Tune's ``td3_trial_<id>_<config>``; a
    population trial's by arm and its seeds (``tau=0.02_seeds0-1-2_5f3a2_00001``), each member's
    events in its folder ``seed<k>`` there."""

    def __init__(self, spec: StudySpec) -> None:
        self._spec = spec

    def __call__(self, trial: Any) -> str:
        members = members_of(self._spec, trial.config)
        arm = folder_name(members[0].arm)
        if POPULATION in trial.config:
            return f"{arm}_seeds{'-'.join(str(plan.seed) for plan in members)[:40]}_{trial.trial_id}"
        return f"{arm}_seed{members[0].seed}_{trial.trial_id}"


class ConsoleProgress(tune.Callback):
    """A console line per trial outcome as it happens, and every ``PROGRESS_SECONDS`` a line on
    the trials running: plain lines, so a study's log reads the same in a terminal and a file.
    A population trial's members count, report and end as the trials of their seeds."""

    def __init__(self, spec: StudySpec) -> None:
        self._spec = spec
        self._members: dict[str, list[TrialPlan]] = {}  # Tune trial id -> its plans
        self._latest: dict[str, tuple[int, float]] = {}  # member id -> (env steps, eval return)
        self._ended: set[str] = set()  # member ids whose outcome was printed
        self._next_progress = time.monotonic() + PROGRESS_SECONDS

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() < self._next_progress:
            return
        self._next_progress = time.monotonic() + PROGRESS_SECONDS
        running = []
        for trial in trials:
            if trial.status != "RUNNING":
                continue
            for plan in self._plans(trial):
                key = member_id(trial.trial_id, trial.config, plan.seed)
                if key in self._latest and key not in self._ended:
                    steps, eval_return = self._latest[key]
                    running.append(f"{plan.arm} seed={plan.seed} {steps}/{plan.config.steps}"
                                   + (f" eval {eval_return:.1f}" if math.isfinite(eval_return) else ""))
        done, total = self._counts(trials)
        print(f"[{done}/{total} done] running: {'; '.join(running) or 'starting'}", flush=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        eval_return = result[m.EVAL_RETURN]  # the latest evaluation, NaN before the first
        seed = int(result[r.SEED])
        self._latest[member_id(trial.trial_id, trial.config, seed)] = (int(result[m.ENV_STEPS]), eval_return)
        reason = result.get(r.STOP_REASON)
        if not reason or member_id(trial.trial_id, trial.config, seed) in self._ended:
            return  # a retry replaying a population member's stop says it once
        text = f"{reason} at {int(result[r.STOP_STEP])} env steps, " + (
            f"eval return {eval_return:.1f}" if math.isfinite(eval_return) else "no evaluation yet"
        )
        if reason in GUARD_STOPS:
            text += (f", actor-path Q in [{result[m.ACTOR_Q_MIN]:.3g}, {result[m.ACTOR_Q_MAX]:.3g}]"
                     f" against [{result[m.Q_LOW]:.3g}, {result[m.Q_HIGH]:.3g}]")
        self._line(trials, trial, seed, text)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for plan in self._plans(trial):
            if member_id(trial.trial_id, trial.config, plan.seed) not in self._ended:
                self._line(trials, trial, plan.seed, f"error: {trial.error_file}")

    def get_state(self) -> dict[str, Any]:
        # Kept with Tune's experiment state: a resumed study's population members that ended before
        # the driver stopped still count as ended (they report no more).
        return {"ended": sorted(self._ended)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._ended = set(state["ended"])

    def _plans(self, trial: Any) -> list[TrialPlan]:
        if trial.trial_id not in self._members:
            self._members[trial.trial_id] = members_of(self._spec, trial.config)
        return self._members[trial.trial_id]

    def _counts(self, trials: list) -> tuple[int, int]:
        """(members ended, members in all): a trial that ended counts all of its members."""
        done = total = 0
        for trial in trials:
            plans = self._plans(trial)
            total += len(plans)
            if trial.status in ("TERMINATED", "ERROR"):
                done += len(plans)
            else:
                done += sum(member_id(trial.trial_id, trial.config, plan.seed) in self._ended for plan in plans)
        return done, total

    def _line(self, trials: list, trial: Any, seed: int, text: str) -> None:
        self._ended.add(member_id(trial.trial_id, trial.config, seed))
        arm = self._plans(trial)[0].arm
        done, total = self._counts(trials)
        print(f"[{done}/{total}] {arm} seed={seed}: {text}", flush=True)


# --------------------------------------------------------------------------------------------
# The table at the end
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialOutcome:
    arm: str
    seed: int
    summary: r.TrialSummary


def collect_outcomes(spec: StudySpec, results: Any) -> list[TrialOutcome]:
    """One outcome per trial (per member of a population trial) from Tune's ResultGrid: the results
    contract's summary of its reported rows (``result.json``, kept whole across retries by
    ``study.tune_logs``)."""
    outcomes = []
    for result in results:
        history = result.metrics_dataframe
        rows = history.to_dict("records") if history is not None and m.ENV_STEPS in history else []
        for plan in members_of(spec, result.config):
            member_rows = [row for row in rows if row[r.SEED] == plan.seed] if POPULATION in result.config else rows
            reported = r.reported_history(member_rows, errored=result.error is not None)
            summary = r.summarize(reported.series(r.CURVE_KEYS), env_steps=int(reported.last.get(m.ENV_STEPS, 0) or 0),
                                  stop_reason=reported.stop_reason, stop_step=reported.last.get(r.STOP_STEP))
            outcomes.append(TrialOutcome(arm=plan.arm, seed=plan.seed, summary=summary))
    order = {plan.arm: i for i, plan in enumerate(expand(spec))} if spec.design != "optuna" else {}
    return sorted(outcomes, key=lambda o: (order.get(o.arm, len(order)), o.arm, o.seed))


def steps_per_trial(spec: StudySpec) -> str:
    """The budget's steps, or each regime's where regimes have budgets of their own."""
    by_regime = regime_steps(spec)
    if set(by_regime.values()) <= {spec.budget.steps}:
        return f"{spec.budget.steps} env steps per trial"
    return "env steps per trial: " + ", ".join(f"{steps} in {regime}" for regime, steps in by_regime.items())


def print_table(spec: StudySpec, outcomes: list[TrialOutcome]) -> None:
    table = Table(title=f"study {spec.name}: {spec.design}, {steps_per_trial(spec)}")
    for column in ("arm", "seed", "env steps", "eval return", "max actor-path Q", "outcome"):
        table.add_column(column, justify="left" if column in ("arm", "outcome") else "right")
    previous = None
    for o in outcomes:
        figures = o.summary
        outcome = figures.stop_reason or "unfinished"
        if figures.stop_reason in ("asha", *GUARD_STOPS) and figures.stop_step is not None:
            outcome += f" @ {figures.stop_step}"
        style = "red" if figures.stop_reason in (*GUARD_STOPS, "error") else None
        table.add_row(
            o.arm if o.arm != previous else "",
            str(o.seed),
            str(figures.env_steps),
            f"{figures.final_return:.1f}",
            f"{figures.max_actor_q:.4g}",
            outcome,
            style=style,
            end_section=False,
        )
        previous = o.arm
    Console(width=max(Console().width, 120)).print(table)  # a pipe reports 80 columns


def read_back(spec: StudySpec, storage: Path, tracking_uri: str) -> StudyResults | None:
    """The finished study as the report reads it (``analysis.load``), for the verdicts and the report;
    None, with a line saying why, when it cannot be read: the trials ran and are stored, and a failed
    read-back must not fail the study (``python -m analysis.report`` can be run again)."""
    try:
        return load_study(storage, spec.name, tracking_uri=tracking_uri)
    except Exception as error:
        print(f"\nResults: could not read the study's results back from {tracking_uri}: {one_line(error)}")
        return None


def print_verdicts(spec: StudySpec, results: StudyResults | None, storage: Path) -> None:
    """A line per arm against the baseline (``analysis.verdicts.verdict_line``: paired by seed, returns
    at a common step, censored trials counted apart). One-at-a-time designs only; a note for the
    others, and for a study without a baseline."""
    if spec.design != "one_at_a_time":
        print(f"\nVerdicts: none for a {spec.design} design (python -m analysis.report has its tables)")
        return
    if results is None:
        return
    missing = missing_baselines(results.trials["arm"])
    if no_baseline_ran(results.trials["arm"]):
        print(f"\nVerdicts: none, the study has no {' or '.join(map(repr, missing))} arm to compare against")
        return
    try:
        lines = [verdict_line(c) for c in arm_comparisons(results.trials, results.curves)]
    except Exception as error:  # as for the read-back: the study's trials stand
        print(f"\nVerdicts: could not compare the arms: {one_line(error)}")
        return
    report = f"python -m analysis.report --storage {storage} --study {spec.name}"
    against = f"its regime's {BASELINE}" if spec.regimes else BASELINE
    print(f"\nVerdicts (each arm against {against}; {report} has the tables):")
    for line in lines:
        print(f"  {line}")
    if missing:
        print(f"  (no {' or '.join(map(repr, missing))} arm ran: its regime's arms are not compared)")


def publish_report(spec: StudySpec, results: StudyResults | None, storage: Path) -> str | None:
    """The report in ``<storage>/<study>/report`` and, in the study's MLflow store, each arm's aggregates
    and the report on the study run, as ``python -m analysis.report`` writes them (``analysis.publish``);
    returns the URL of the arms side by side. Like the verdicts, it never fails a study whose trials
    ran: a line says what went wrong, and ``analysis.report`` can be run again."""
    if results is None:
        return None
    try:
        path, _ = write_report(results, storage / spec.name / REPORT_DIR)
    except Exception as error:
        print(f"\nReport: could not write it: {one_line(error)}")
        return None
    # Whether it reached the study's MLflow run too, publishing says (a line when the upload failed).
    print(f"\nReport: {path.with_suffix('.html')}")
    return publish_or_say(results, path.parent)


if __name__ == "__main__":
    sys.exit(main())
