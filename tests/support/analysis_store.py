"""A small study written in exactly the layout of the results contract, with the real MLflow
client (and Tune's file format), so every expected value is known: five trials over three arms,
two of them stopped by the guard, one not stopped yet out of its Q interval. Test support, not
shipped; moved out of test_analysis_load.py."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric

from study import metrics as m
from study import results as r
from study.config import TrialConfig
from study.plan import PLAN, REGIME_SEPARATOR, TrialPlan

STUDY = "unit"
STEPS = [500, 1000, 1500, 2000]
EVAL_EVERY = 1000  # the 1,500-step reports repeat the 1,000-step evaluation
Q_INTERVAL = (-1600.0, 0.0)  # Pendulum-like: rewards in [-16, 0], gamma 0.99
NAN = math.nan


def _report(step: int, eval_return: float, q_max: float, q_min: float, buffer_q: float) -> dict[str, float]:
    """A report row as run_trial makes it: every REPORT_KEYS key, guard metrics filled in. The
    actor-path batch mean lies halfway between its max and min (inf with an infinite max); buffer
    Q (``train/q1_value``) is given, and stays bounded where actor-path Q runs away (t2, t4): the
    CARLA run's signature."""
    low, high = Q_INTERVAL
    excess = max(q_max - high, low - q_min, 0.0) / (high - low) if math.isfinite(q_max) else math.inf
    return m.complete_report(
        {
            m.ENV_STEPS: step,
            m.EVAL_RETURN: eval_return,
            m.EVAL_STEP: step // EVAL_EVERY * EVAL_EVERY if math.isfinite(eval_return) else NAN,  # reports repeat it
            m.ACTOR_Q_MAX: q_max,
            m.ACTOR_Q_MIN: q_min,
            m.ACTOR_Q_MEAN: (q_max + q_min) / 2,
            m.Q1_VALUE: buffer_q,
            m.Q_LOW: low,
            m.Q_HIGH: high,
            m.GUARD_EXCESS: excess,
        }
    )


# arm -> factor params; trial -> (arm, seed, stop_reason, stop_step, reports)
ARMS = {"baseline": {"tau": 0.005}, "tau=1.0": {"tau": 1.0}, "tau=0.5": {"tau": 0.5}}
TRIALS = {
    "t0": ("baseline", 0, "completed", None, [_report(500, NAN, 2, -300, -250), _report(1000, -900, 3, -500, -400),
                                              _report(1500, -900, 4, -600, -450), _report(2000, -400, 5, -700, -500)]),
    "t1": ("baseline", 1, "completed", None, [_report(500, NAN, 1, -300, -260), _report(1000, -1000, 2, -500, -380),
                                              _report(1500, -1000, 2, -600, -460), _report(2000, -600, 3, -700, -520)]),
    # The guard stops it: excess 1000/1600 > 0.1 at 1000 and 1500 (patience 2).
    "t2": ("tau=1.0", 0, "q_explosion", 1500, [_report(500, NAN, 10, -300, -300), _report(1000, -1200, 1000, -500, -350),
                                                _report(1500, -1200, 5000, -600, -380)]),
    "t3": ("tau=1.0", 1, "non_finite", 1000, [_report(500, NAN, 10, -300, -300), _report(1000, -1300, math.inf, -500, -320)]),
    # Not stopped (guard off, say), yet its Q left the interval at 1500 and 2000: the replayed
    # guard calls it an explosion at 2000.
    "t4": ("tau=0.5", 0, "completed", None, [_report(500, NAN, 10, -300, -280), _report(1000, -800, 20, -500, -330),
                                              _report(1500, -800, 900, -600, -350), _report(2000, -700, 9000, -700, -360)]),
}


# Published returns as a study file's ``reference`` gives them (study.spec.schema.Reference): one
# set at the step this study's returns are read at (2,000), one at a step it never reaches.
REFERENCE = [
    {"source": "a paper, Table 2", "env": "Pendulum-v0", "env_steps": 2000, "measure": "last evaluation",
     "returns": {"baseline": {"mean": -450.5, "std": 20.25, "trials": 10, "label": "TD3"}, "tau=0.5": {"mean": -700.0}}},
    {"source": "its learning curves", "env": "Pendulum-v1", "env_steps": 1_000_000,
     "returns": {"baseline": {"mean": -150.0}}},
]


def write_mlflow_study(storage: Path, design: str = "one_at_a_time", reference: list[dict] | None = None, regime: str = "",
                       regime_agent: dict[str, float] | None = None) -> str:
    """The store study.run's callback writes: a study run, arm runs tagged with it, trial runs nested
    under their arm, with the contract's tags, JSON parameters and ``summary/*`` metrics
    (``study.results``); ``reference`` as the study run's ``reference.json``, as
    ``study.mlflow_logging.create_study_run`` logs it; with ``regime``, every arm is that regime's
    (named ``regime/arm``, as study.plan names them), whose ``regime_agent`` settings are factors too."""
    uri = r.default_tracking_uri(storage)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment(STUDY, artifact_location=str(storage / "mlartifacts"))
    study_tags = {r.ROLE: "study", r.STUDY_NAME: STUDY, r.STUDY_DESIGN: design}
    study = client.create_run(experiment, tags=study_tags, run_name=STUDY).info.run_id
    for key, value in {"env": "Pendulum-v1", "steps": 2000, "design": design}.items():
        client.log_param(study, key, r.encode_param(value))
    if reference:
        client.log_dict(study, reference, r.REFERENCE_FILE)
    def named(arm: str) -> str:
        return f"{regime}{REGIME_SEPARATOR}{arm}" if regime else arm

    arm_ids = {}
    for arm, levels in ARMS.items():
        tags = {r.ROLE: "arm", r.ARM: named(arm), r.STUDY_RUN: study}
        arm_ids[arm] = client.create_run(experiment, tags=tags, run_name=named(arm)).info.run_id
        for key, value in {**levels, **(regime_agent or {})}.items():
            client.log_param(arm_ids[arm], key, r.encode_param(value))
    for trial_id, (arm, seed, stop_reason, stop_step, reports) in TRIALS.items():
        tags = {r.ROLE: "trial", r.ARM: named(arm), r.SEED: str(seed), r.TRIAL_ID: trial_id, r.STOP_REASON: stop_reason,
                r.STOP_STEP: str(stop_step), r.PARENT: arm_ids[arm], r.STUDY_RUN: study}
        run = client.create_run(experiment, tags=tags, run_name=r.trial_run_name(named(arm), seed)).info.run_id
        now = int(time.time() * 1000)
        last_step = int(reports[-1][m.ENV_STEPS])
        history = [Metric(k, v, now, int(report[m.ENV_STEPS])) for report in reports for k, v in report.items()]
        series = {key: [report[key] for report in reports] for key in r.CURVE_KEYS}
        summary = r.summarize(series, env_steps=last_step, stop_reason=stop_reason, stop_step=stop_step)
        history += [Metric(k, v, now, last_step) for k, v in summary.metrics().items()]
        client.log_batch(run, metrics=history, params=[])
        client.log_param(run, r.SEED, r.encode_param(seed))
        client.log_param(run, "tau", r.encode_param(ARMS[arm]["tau"]))
    return uri


def write_tune_study(storage: Path, reference: list[dict] | None = None, regime: str = "",
                     regime_agent: dict[str, float] | None = None) -> Path:
    """Tune's layout as study.run leaves it: <storage>/<study>/study.json (the validated study
    file), and per trial <trial dir>/{params.json (its plan),result.json}, one JSON row per report carrying
    arm and seed (the last one also stop_reason and stop_step, earlier ones an empty reason); with
    ``regime``, as ``write_mlflow_study``'s."""
    folder = storage / STUDY
    folder.mkdir(parents=True)
    regime_agent = regime_agent or {}
    spec = {"env": "Pendulum-v1", "design": "one_at_a_time", "agent": {"tau": 0.005, "gamma": 0.99},
            "factors": {"tau": [1.0, 0.5]}, "arms": [], "distributions": {}, "reference": reference or [],
            "regimes": {regime: {"agent": regime_agent}} if regime else {}}  # fmt: skip
    (folder / r.STATE_FILE).write_text(json.dumps({"spec": spec, "study_run_id": "x"}))
    for trial_id, (arm, seed, stop_reason, stop_step, reports) in TRIALS.items():
        trial_dir = folder / f"{regime}{arm}_seed{seed}_{trial_id}"  # study.run.TrialFolders
        trial_dir.mkdir()
        overrides = {} if arm == "baseline" else dict(ARMS[arm])
        agent = {**spec["agent"], **regime_agent, **overrides}
        trial_config = TrialConfig.model_validate({"env": "Pendulum-v1", "agent": agent, "seed": seed})
        name = f"{regime}{REGIME_SEPARATOR}{arm}" if regime else arm
        plan = TrialPlan(arm=name, seed=seed, overrides=overrides, levels={**ARMS[arm], **regime_agent},
                         regime=regime or None, config=trial_config)  # fmt: skip
        config = {PLAN: plan.model_dump(mode="json")}
        (trial_dir / r.TUNE_PARAMS_FILE).write_text(json.dumps(config))
        rows = []
        for i, report in enumerate(reports, start=1):
            rows.append({**report, "arm": plan.arm, "seed": seed, "trial_id": trial_id, "training_iteration": i,
                         "config": config, "stop_reason": "", "stop_step": NAN})
        rows[-1].update(stop_reason=stop_reason, stop_step=stop_step)
        (trial_dir / r.TUNE_RESULT_FILE).write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "tuner.pkl").write_bytes(b"")  # Tune's own files sit beside the trial dirs
    return folder
