"""Looking for a divergent regime on the embedded simulator: TD3 (safeguards on) that runs away.

    PYTHONPATH=. .venv/bin/python bench/divergent_regime.py --only lr1e-3 --seeds 0 1 --steps 8000

The CARLA run this project serves ran away with TD3's safeguards on (clipped double Q, target
policy smoothing, delayed actor): buffer Q (``train/q1_value``) and target Q stayed inside the
interval of possible returns while the actor-path Q, Q1(s, actor(s)), left it (actor-to-buffer Q
ratio near 30,000). This script runs named candidate configurations (TD3Config overrides + env
settings) x seeds through the project's real trial loop (``study.trial.run_trial`` with
``stop_on_guard=False``, as bench/guard_interval.py does) and replays each report's
``guard/actor_q_excess`` through ``study.guard.guard_step`` with ``GuardConfig()`` defaults
(tolerance 0.1, patience 2). A run ends at the guard's stop or at its budget.

Per run it records: the guard's verdict and step (or None), max actor-path Q (batch max), the
actor-path Q mean, buffer Q (``train/q1_value``), target Q (``debug/target_q_mean``/``_max``) and
the guard interval at the stop (or, for a run that was not stopped, at the report where the
actor-path Q max peaked), the actor-to-buffer Q ratio there (``guard/actor_to_buffer_q_ratio``,
actor-path Q mean over buffer Q) and its largest value over the run, the episode lengths seen, and
the per-report trace. Runs go one at a time in this process (one torch thread); the JSON and the
table are rewritten after every run, so an interrupted search keeps what it finished.

``--only NAME`` (repeatable) keeps candidates whose name contains NAME; ``--seeds`` and
``--steps`` set the seeds and the budget (multiple of 500); ``--append`` adds to an existing JSON
instead of replacing it (a run already there, same candidate, seed and budget, is skipped).
``--list`` prints the candidates. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import json_safe, table_number

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

REPORT_EVERY = 500

# Reward shaped like the seed CARLA run's: a positive floor (every term that can go negative
# switched off, so a step earns efficiency + progress >= 0) and short episodes (truncated at 10
# steps, bootstrapped as a time limit). The CARLA run saw rewards in [0.77, 157], mean 11.9,
# episodes near 10 steps.
POSITIVE_REWARD = {
    "lateral_weight": 0.0, "heading_weight": 0.0, "jerk_weight": 0.0, "steer_rate_weight": 0.0,
    "collision_penalty": 0.0, "off_road_penalty": 0.0, "near_miss_penalty": 0.0,
}  # fmt: skip
SEED_SHAPE = {"reward": POSITIVE_REWARD, "max_episode_steps": 10}
VECTOR = {"observation": "vector"}
IMAGE = {"observation": "image"}
AGGRESSIVE = ["lr_actor=0.001", "lr_critic=0.001", "gamma=0.999", "tau=0.05"]

# name -> (env settings, TD3Config overrides, what it tests)
CANDIDATES: dict[str, tuple[dict[str, Any], list[str], str]] = {
    "td3_default": (VECTOR, [], "reference: TD3 defaults, vector obs"),
    "lr1e-3": (VECTOR, ["lr_actor=0.001", "lr_critic=0.001"], "higher learning rates"),
    "gamma0.999": (VECTOR, ["gamma=0.999"], "longer horizon"),
    "tau0.05": (VECTOR, ["tau=0.05"], "faster target update"),
    "seed_shape": ({**VECTOR, **SEED_SHAPE}, [], "seed's reward shape: positive floor, 10-step episodes"),
    "aggressive": (VECTOR, AGGRESSIVE, "lr 1e-3 + gamma 0.999 + tau 0.05"),
    "aggressive_seed_shape": ({**VECTOR, **SEED_SHAPE}, AGGRESSIVE, "aggressive + seed's reward shape"),
    "aggressive_gradclip": (VECTOR, [*AGGRESSIVE, "grad_clip_norm=10.0"], "aggressive + gradient clipping 10"),
    "aggressive_seed_shape_lr3e-3": ({**VECTOR, **SEED_SHAPE}, [*AGGRESSIVE, "lr_actor=0.003", "lr_critic=0.003"],
                                     "aggressive + seed's shape, learning rates 3e-3"),
    "aggressive_seed_shape_critic_lr3e-3": ({**VECTOR, **SEED_SHAPE}, [*AGGRESSIVE, "lr_critic=0.003"],
                                            "aggressive + seed's shape, critic learning rate 3e-3 (actor 1e-3)"),
    "seed_shape_lr3e-3_gamma0.999": ({**VECTOR, **SEED_SHAPE}, ["lr_actor=0.003", "lr_critic=0.003", "gamma=0.999"],
                                     "seed's shape, learning rates 3e-3, gamma 0.999 (tau 0.005)"),
    "seed_shape_lr3e-3": ({**VECTOR, **SEED_SHAPE}, ["lr_actor=0.003", "lr_critic=0.003"],
                          "seed's shape, learning rates 3e-3 (gamma 0.99, tau 0.005)"),
    "seed_shape_lr3e-3_tau0.02": ({**VECTOR, **SEED_SHAPE}, ["lr_actor=0.003", "lr_critic=0.003", "tau=0.02"],
                                  "seed's shape, learning rates 3e-3, tau 0.02 (gamma 0.99)"),
    "seed_shape_lr1e-3_tau0.05": ({**VECTOR, **SEED_SHAPE}, ["lr_actor=0.001", "lr_critic=0.001", "tau=0.05"],
                                  "seed's shape, learning rates 1e-3, tau 0.05 (gamma 0.99)"),
    "seed_shape_tau0.05": ({**VECTOR, **SEED_SHAPE}, ["tau=0.05"], "seed's shape, tau 0.05 (learning rates 3e-4)"),
    "seed_shape_lr1e-3": ({**VECTOR, **SEED_SHAPE}, ["lr_actor=0.001", "lr_critic=0.001"],
                          "seed's shape, learning rates 1e-3 (tau 0.005)"),
    "lr3e-3_gamma0.999_tau0.05": (VECTOR, ["lr_actor=0.003", "lr_critic=0.003", "gamma=0.999", "tau=0.05"],
                                  "learning rates 3e-3, gamma 0.999, tau 0.05, default reward"),
    "aggressive_seed_shape_tau0.2": ({**VECTOR, **SEED_SHAPE}, [*AGGRESSIVE, "tau=0.2"],
                                     "aggressive + seed's shape, tau 0.2"),
    "image_default": (IMAGE, [], "image obs with the CNN encoders, TD3 defaults"),
    "image_aggressive": (IMAGE, AGGRESSIVE, "image obs + aggressive"),
    "image_aggressive_seed_shape": ({**IMAGE, **SEED_SHAPE}, AGGRESSIVE, "image + aggressive + seed's shape"),
}


class _Stopped(Exception):
    """Raised from the report callback to end a run at the guard's stop."""


def run_one(name: str, seed: int, steps: int) -> dict[str, Any]:
    import torch

    import study.trial
    from study import metrics as m
    from study.config import build_trial_config
    from study.guard import GuardConfig, GuardState, guard_step

    torch.set_num_threads(1)
    settings, overrides, _ = CANDIDATES[name]
    base = {
        "env": "drive", "env_settings": settings, "steps": steps, "seed": seed, "eval_every": steps,
        "eval_episodes": 1, "report_every": REPORT_EVERY, "checkpoint_every": steps,
        "guard": {"enabled": False}, "device": "cpu", "torch_threads": 1,
    }  # fmt: skip
    cfg = build_trial_config(base, overrides)
    guard_cfg = GuardConfig()
    state = GuardState()
    stop: dict[str, Any] = {"step": None, "reason": None}
    trace: list[dict[str, Any]] = []

    def get(report: dict[str, float], key: str) -> float:
        value = report.get(key, math.nan)
        return float(value) if value is not None else math.nan

    def on_report(report: dict[str, float], _checkpoint: Any) -> None:
        nonlocal state
        row = {
            "step": int(report[m.ENV_STEPS]),
            "actor_q_max": get(report, m.ACTOR_Q_MAX), "actor_q_min": get(report, m.ACTOR_Q_MIN),
            "actor_q_mean": get(report, m.ACTOR_Q_MEAN), "q1": get(report, "train/q1_value"),
            "q1_max": get(report, "debug/q1_max"),
            "target_q_mean": get(report, "debug/target_q_mean"), "target_q_max": get(report, "debug/target_q_max"),
            "ratio": get(report, m.ACTOR_TO_BUFFER_Q), "excess": get(report, m.GUARD_EXCESS),
            "q_low": get(report, m.Q_LOW), "q_high": get(report, m.Q_HIGH),
            "episode_length": get(report, m.EPISODE_LENGTH), "episode_return": get(report, m.EPISODE_RETURN),
            "reward_min": get(report, "debug/reward_min"), "reward_max": get(report, "debug/reward_max"),
            "done_ratio": get(report, "debug/done_ratio"),
        }  # fmt: skip
        trace.append(row)
        state, verdict = guard_step(state, row["excess"], guard_cfg)
        if verdict is not None and stop["step"] is None:
            stop.update(step=row["step"], reason=str(getattr(verdict, "value", verdict)))
            raise _Stopped

    started = time.perf_counter()
    out_dir = Path(tempfile.mkdtemp(prefix="divergent_regime-"))
    try:
        study.trial.run_trial(cfg, out_dir, on_report=on_report, progress=False, tensorboard=False,
                              stop_on_guard=False)
    except _Stopped:
        pass
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    wall = time.perf_counter() - started

    finite_max = [r for r in trace if math.isfinite(r["actor_q_max"])]
    if stop["step"] is not None:
        at = trace[-1]
    elif finite_max:
        at = max(finite_max, key=lambda r: r["actor_q_max"])
    else:
        at = trace[-1] if trace else {}
    ratios = [abs(r["ratio"]) for r in trace if math.isfinite(r["ratio"])]
    lengths = [r["episode_length"] for r in trace if math.isfinite(r["episode_length"])]
    record = {
        "candidate": name, "seed": seed, "budget": steps, "env_settings": settings, "overrides": overrides,
        "steps_run": trace[-1]["step"] if trace else None, "wall_s": round(wall, 1),
        "stopped": stop["step"] is not None, "stop_step": stop["step"], "stop_reason": stop["reason"],
        "max_actor_q": max((r["actor_q_max"] for r in finite_max), default=math.nan),
        "at": "stop" if stop["step"] is not None else "peak", "at_step": at.get("step"),
        "actor_q_max_at": at.get("actor_q_max"), "actor_q_mean_at": at.get("actor_q_mean"),
        "q1_at": at.get("q1"), "target_q_mean_at": at.get("target_q_mean"), "target_q_max_at": at.get("target_q_max"),
        "ratio_at": at.get("ratio"), "max_abs_ratio": max(ratios, default=math.nan),
        "interval_at": [at.get("q_low"), at.get("q_high")], "excess_at": at.get("excess"),
        "episode_length_range": [min(lengths), max(lengths)] if lengths else None,
        "trace": trace,
    }  # fmt: skip
    return json_safe(record)


def table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| candidate | seed | steps run | stopped (step, reason) | max actor Q | at | actor Q max / mean there "
        "| buffer Q there | target Q mean / max there | actor/buffer ratio there | max abs ratio | interval there "
        "| episode lengths | wall s |",
        "|---|---:|---:|---|---:|---|---|---:|---|---:|---:|---|---|---:|",
    ]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['candidate']} | {r['seed']} | error: {r['error']} |" + " |" * 11)
            continue
        stop = f"{r['stop_step']} {r['stop_reason']}" if r["stopped"] else "no"
        lengths = r["episode_length_range"]
        lines.append(
            f"| {r['candidate']} | {r['seed']} | {r['steps_run']} | {stop} | {table_number(r['max_actor_q'])} "
            f"| {r['at']} {r['at_step']} | {table_number(r['actor_q_max_at'])} / {table_number(r['actor_q_mean_at'])} "
            f"| {table_number(r['q1_at'])} | {table_number(r['target_q_mean_at'])} / {table_number(r['target_q_max_at'])} "
            f"| {table_number(r['ratio_at'])} | {table_number(r['max_abs_ratio'])} "
            f"| [{table_number(r['interval_at'][0])}, {table_number(r['interval_at'][1])}] "
            f"| {'-' if not lengths else f'{table_number(lengths[0])}..{table_number(lengths[1])}'} | {r['wall_s']} |"
        )
    return "\n".join(lines)


def summary(records: list[dict[str, Any]]) -> str:
    lines = ["| candidate | what | runs | stopped | stop steps |", "|---|---|---:|---:|---|"]
    for name in dict.fromkeys(r["candidate"] for r in records):
        runs = [r for r in records if r["candidate"] == name and "error" not in r]
        stopped = [r for r in runs if r["stopped"]]
        steps = ", ".join(str(r["stop_step"]) for r in stopped) or "-"
        lines.append(f"| {name} | {CANDIDATES[name][2]} | {len(runs)} | {len(stopped)} | {steps} |")
    return "\n".join(lines)


def write(records: list[dict[str, Any]], out: Path, md: Path, command: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "guard": {"tolerance": 0.1, "patience": 2}, "report_every": REPORT_EVERY,
               "candidates": {k: {"env_settings": v[0], "overrides": v[1], "what": v[2]} for k, v in CANDIDATES.items()},
               "runs": records}  # fmt: skip
    out.write_text(json.dumps(payload, indent=1))
    md.write_text(
        "Divergent-regime search on `drive` (TD3 safeguards on unless an override says otherwise); guard "
        f"GuardConfig() defaults (tolerance 0.1, patience 2), report every {REPORT_EVERY}; one torch thread per "
        "run, runs in one process one after the other (several such processes may have shared the machine: wall s "
        "is not a speed measurement). 'there' = at the guard's stop, or at the report of peak actor-path Q max when not "
        f"stopped.\n\n{summary(records)}\n\n{table(records)}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "divergent_regime.json")
    parser.add_argument("--md", type=Path, default=None, help="markdown table (default: beside --out, .md)")
    parser.add_argument("--only", action="append", default=[], help="keep candidates whose name contains this")
    parser.add_argument("--exact", action="store_true", help="--only names must match exactly")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--append", action="store_true")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        for name, (settings, overrides, what) in CANDIDATES.items():
            print(f"{name}: {what}; env {settings}; overrides {overrides}")
        return
    md = args.md or args.out.with_suffix(".md")
    names = [n for n in CANDIDATES if not args.only
             or any((key == n) if args.exact else (key in n) for key in args.only)]
    records: list[dict[str, Any]] = []
    commands: list[str] = []
    if args.append and args.out.exists():
        old = json.loads(args.out.read_text())
        records = old["runs"]
        commands = old["command"] if isinstance(old["command"], list) else [old["command"]]
    commands.append(" ".join(sys.argv))
    done = {(r["candidate"], r["seed"], r.get("budget")) for r in records}
    started = time.perf_counter()
    for seed in args.seeds:  # breadth first: every candidate's first seed before any second seed
        for name in names:
            if (name, seed, args.steps) in done:
                continue
            try:
                record = run_one(name, seed, args.steps)
            except Exception as err:  # keep the other runs
                record = {"candidate": name, "seed": seed, "budget": args.steps,
                          "error": f"{err.__class__.__name__}: {err}"}
            records.append(record)
            brief = record.get("error") or (
                f"{record['steps_run']} steps, {record['wall_s']} s, stopped {record['stop_step']}, "
                f"max actor Q {table_number(record['max_actor_q'])}, buffer Q {table_number(record['q1_at'])}, "
                f"ratio {table_number(record['ratio_at'])}")
            print(f"[{time.perf_counter() - started:6.0f} s] {name}/s{seed}: {brief}", flush=True)
            write(records, args.out, md, commands)
    print(summary(records))
    print(table(records))


if __name__ == "__main__":
    main()
