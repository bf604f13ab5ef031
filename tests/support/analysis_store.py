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

from analysis import load
from study import metrics as m

STUDY = "unit"
STEPS = [500, 1000, 1500, 2000]
Q_INTERVAL = (-1600.0, 0.0)  # Pendulum-like: rewards in [-16, 0], gamma 0.99
NAN = math.nan


def _report(step: int, eval_return: float, q_max: float, q_min: float) -> dict[str, float]:
    """A report row as run_trial makes it: every REPORT_KEYS key, guard metrics filled in."""
    low, high = Q_INTERVAL
    excess = max(q_max - high, low - q_min, 0.0) / (high - low) if math.isfinite(q_max) else math.inf
    return m.complete_report(
        {
            m.ENV_STEPS: step,
            m.EVAL_RETURN: eval_return,
            m.ACTOR_Q_MAX: q_max,
            m.ACTOR_Q_MIN: q_min,
            "guard/q_low": low,
            "guard/q_high": high,
            m.GUARD_EXCESS: excess,
        }
    )


# arm -> factor params; trial -> (arm, seed, stop_reason, stop_step, reports)
ARMS = {"baseline": {"tau": "0.005"}, "tau=1.0": {"tau": "1.0"}, "tau=0.5": {"tau": "0.5"}}
TRIALS = {
    "t0": ("baseline", 0, "completed", None, [_report(500, NAN, 2, -300), _report(1000, -900, 3, -500),
                                              _report(1500, -900, 4, -600), _report(2000, -400, 5, -700)]),
    "t1": ("baseline", 1, "completed", None, [_report(500, NAN, 1, -300), _report(1000, -1000, 2, -500),
                                              _report(1500, -1000, 2, -600), _report(2000, -600, 3, -700)]),
    # The guard stops it: excess 1000/1600 > 0.1 at 1000 and 1500 (patience 2).
    "t2": ("tau=1.0", 0, "q_explosion", 1500, [_report(500, NAN, 10, -300), _report(1000, -1200, 1000, -500),
                                                _report(1500, -1200, 5000, -600)]),
    "t3": ("tau=1.0", 1, "non_finite", 1000, [_report(500, NAN, 10, -300), _report(1000, -1300, math.inf, -500)]),
    # Not stopped (guard off, say), yet its Q left the interval at 1500 and 2000: the replayed
    # guard calls it an explosion at 2000.
    "t4": ("tau=0.5", 0, "completed", None, [_report(500, NAN, 10, -300), _report(1000, -800, 20, -500),
                                              _report(1500, -800, 900, -600), _report(2000, -700, 9000, -700)]),
}


def write_mlflow_study(storage: Path, design: str = "one_at_a_time") -> str:
    """The store study.run's callback writes: study run > arm runs > trial runs, nested."""
    uri = load.default_tracking_uri(storage)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment(STUDY, artifact_location=str(storage / "mlartifacts"))
    study_tags = {"study.role": "study", "study.name": STUDY, "study.design": design}
    study = client.create_run(experiment, tags=study_tags, run_name=STUDY).info.run_id
    for key, value in {"env": "Pendulum-v1", "steps": 2000, "design": design}.items():
        client.log_param(study, key, value)
    arm_ids = {}
    for arm, params in ARMS.items():
        tags = {"study.role": "arm", "arm": arm, "mlflow.parentRunId": study}
        arm_ids[arm] = client.create_run(experiment, tags=tags, run_name=arm).info.run_id
        for key, value in params.items():
            client.log_param(arm_ids[arm], key, value)
    for trial_id, (arm, seed, stop_reason, stop_step, reports) in TRIALS.items():
        tags = {
            "study.role": "trial",
            "arm": arm,
            "seed": str(seed),
            "trial_id": trial_id,
            "stop_reason": stop_reason,
            "stop_step": str(stop_step),
            "mlflow.parentRunId": arm_ids[arm],
        }
        run = client.create_run(experiment, tags=tags, run_name=f"{arm} seed={seed}").info.run_id
        now = int(time.time() * 1000)
        history = [Metric(k, v, now, int(r[m.ENV_STEPS])) for r in reports for k, v in r.items()]
        summary = _summary(reports)
        history += [Metric(f"summary/{k}", v, now, int(reports[-1][m.ENV_STEPS])) for k, v in summary.items()]
        client.log_batch(run, metrics=history, params=[])
        client.log_param(run, "seed", seed)
        client.log_param(run, "tau", ARMS[arm]["tau"])
    return uri


def _summary(reports: list[dict[str, float]]) -> dict[str, float]:
    """What run_trial's summary holds (finite extremes, last evaluation), under contract names."""
    returns = [r[m.EVAL_RETURN] for r in reports if math.isfinite(r[m.EVAL_RETURN])]
    q_max = [r[m.ACTOR_Q_MAX] for r in reports if math.isfinite(r[m.ACTOR_Q_MAX])]
    q_min = [r[m.ACTOR_Q_MIN] for r in reports if math.isfinite(r[m.ACTOR_Q_MIN])]
    return {
        "final_return": returns[-1],
        "best_return": max(returns),
        "max_actor_q": max(q_max),
        "min_actor_q": min(q_min),
        "q_low": Q_INTERVAL[0],
        "q_high": Q_INTERVAL[1],
        "env_steps": reports[-1][m.ENV_STEPS],
    }


def write_tune_study(storage: Path) -> Path:
    """Tune's layout as study.run leaves it: <storage>/<study>/study.json (the validated study
    file), and per trial <trial dir>/{params.json,result.json}, one JSON row per report carrying
    arm and seed (the last one also stop_reason and stop_step, earlier ones an empty reason)."""
    folder = storage / STUDY
    folder.mkdir(parents=True)
    spec = {"design": "one_at_a_time", "agent": {"tau": 0.005, "gamma": 0.99}, "factors": {"tau": [1.0, 0.5]},
            "arms": [], "distributions": {}}
    (folder / "study.json").write_text(json.dumps({"spec": spec, "study_run_id": "x"}))
    for trial_id, (arm, seed, stop_reason, stop_step, reports) in TRIALS.items():
        trial_dir = folder / f"td3_trial_{trial_id}_{seed}"
        trial_dir.mkdir()
        config = {"set": {} if arm == "baseline" else {"tau": float(arm.split("=")[1])}, "seed": seed}
        (trial_dir / "params.json").write_text(json.dumps(config))
        rows = []
        for i, report in enumerate(reports, start=1):
            rows.append({**report, "arm": arm, "seed": seed, "trial_id": trial_id, "training_iteration": i,
                         "config": config, "stop_reason": "", "stop_step": NAN})
        rows[-1].update(stop_reason=stop_reason, stop_step=stop_step)
        (trial_dir / "result.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "tuner.pkl").write_bytes(b"")  # Tune's own files sit beside the trial dirs
    return folder
