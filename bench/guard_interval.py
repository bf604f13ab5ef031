"""How the Q guard's interval rule change moves its stops: runaway stop steps and healthy excess.

    PYTHONPATH=. .venv/bin/python bench/guard_interval.py --out bench/results/guard_interval.json

The guard's reward range changed:

- OLD rule: the env's declared reward range when it declares one (Drive-v0: [-50, 200]), else the
  rewards seen so far; interval = ``return_interval(*clip_reward_range(r_min, r_max, clip), gamma)``;
  excess = max(q_max - high, low - q_min, 0) / max(high - low, 1.0) (+inf when Q is non-finite).
- NEW rule (``study.guard.q_interval`` / ``actor_q_excess``): the declared range intersected with
  the rewards seen, widened to at least one reward unit.

Every run goes through the project's real trial loop (``study.trial.run_trial`` with
``stop_on_guard=False``), so both rules judge the very same reports. The new-rule excess is the
report's ``guard/actor_q_excess``; the old-rule excess is computed here from the same report, with
the declared and seen reward ranges the trial hands to ``q_interval`` (captured by wrapping
``study.trial.q_interval`` in this process; nothing is changed in the project). Both excess series
are replayed through ``study.guard.guard_step`` with ``GuardConfig()`` defaults (tolerance 0.1,
patience 2); a report before the first actor step has excess NaN and is not judged.

Per run it records: the first step each rule stops at (or None) and why, the max excess under each
rule, max actor-path Q, max |actor-path Q|, max |train/q1_value| (buffer Q), actor_q_max / q1_value
at each stop step, and the per-report trace. Runaway runs end once both rules have stopped them
(or at the budget). Runs go to 2 worker processes (one torch thread each). The packages agents/,
envs/ and study/ are copied to a temporary folder at the start and every worker imports that copy,
so all runs measure one version of the code (its sha256 is in the JSON).

Configurations: ``control`` (the default study's no_target_ddpg arm on drive/vector, reward_clip
1.0, seeds 0-2, 16k steps), ``ddpg_unclipped`` (the same without reward_clip, 10k), healthy TD3
defaults (Pendulum-v1 seeds 0-1 15k; drive/vector seeds 0-1 16k; HalfCheetah-v5 seed 0 20k, needs
``pip install 'gymnasium[mujoco]>=1.0,<2'``) and ``zero_reward`` (Pendulum-v1 with every reward
0.0, seeds 0-1, 10k). ``--max-steps N`` caps every budget (a quick check of the script);
``--only NAME`` keeps the runs whose name contains NAME (repeatable).

Outputs: the per-run records as JSON (``--out``) and a markdown table (``--md``, default beside
the JSON as guard_interval.md), also printed. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium

from bench.common import json_safe, table_number

REPO = Path(__file__).resolve().parent.parent
# The project's packages are copied once at the start (``snapshot_sources``) and every worker
# imports that copy, so that all runs measure the same code even while the working tree changes.
SNAPSHOT_ENV = "GUARD_INTERVAL_SNAPSHOT"
SNAPSHOT_PACKAGES = ("agents", "envs", "study")
_snapshot = os.environ.get(SNAPSHOT_ENV)
for _path in (REPO, *([Path(_snapshot)] if _snapshot else [])):
    if str(_path) in sys.path:
        sys.path.remove(str(_path))
    sys.path.insert(0, str(_path))

ZERO_REWARD_ID = "ZeroRewardPendulum-v0"


def make_zero_reward_pendulum(**kwargs: Any) -> gymnasium.Env:
    """Pendulum-v1 with every reward replaced by 0.0 (no declared reward range)."""
    return gymnasium.wrappers.TransformReward(gymnasium.make("Pendulum-v1", **kwargs), lambda r: 0.0)


# At import time, so that spawned workers (which import this file) have it too.
if ZERO_REWARD_ID not in gymnasium.registry:
    gymnasium.register(ZERO_REWARD_ID, entry_point=make_zero_reward_pendulum)

DRIVE_VECTOR = {"observation": "vector"}
RUNAWAY_SET = [
    "tau=1.0",
    "clipped_double_q=false",
    "target_policy_smoothing=false",
    "policy_delay=1",
    "lr_actor=0.001",
    "lr_critic=0.001",
]
REPORT_EVERY = 500
OLD_MIN_WIDTH = 1.0  # the old rule's absolute width floor for the excess


def run_specs() -> list[dict[str, Any]]:
    """Every run of the measurement, longest first (better packing on two workers)."""
    specs = []

    def add(arm: str, env: str, settings: dict, overrides: list[str], seeds: list[int], budget: int,
            runaway: bool) -> None:
        for seed in seeds:
            specs.append({"name": f"{arm}/s{seed}", "arm": arm, "env": env, "env_settings": settings,
                          "overrides": overrides, "seed": seed, "budget": budget, "runaway": runaway})

    add("control", "drive", DRIVE_VECTOR, [*RUNAWAY_SET, "reward_clip=1.0"], [0, 1, 2], 16_000, True)
    add("ddpg_unclipped", "drive", DRIVE_VECTOR, RUNAWAY_SET, [0, 1, 2], 10_000, True)
    add("healthy_pendulum", "Pendulum-v1", {}, [], [0, 1], 15_000, False)
    add("healthy_drive", "drive", DRIVE_VECTOR, [], [0, 1], 16_000, False)
    add("healthy_halfcheetah", "HalfCheetah-v5", {}, [], [0], 20_000, False)
    add("zero_reward", ZERO_REWARD_ID, {}, [], [0, 1], 10_000, False)
    # Healthy runs always go to the budget; runaways usually stop early: healthy (long) ones first.
    specs.sort(key=lambda spec: (spec["runaway"], -spec["budget"]))
    return specs


# ---- the old rule, as it was in study/guard.py before the change --------------------------------


def old_interval(declared: tuple[float, float] | None, seen: tuple[float, float] | None, gamma: float,
                 reward_clip: float | None) -> tuple[float, float] | None:
    from study.guard import clip_reward_range, return_interval

    reward_range = declared if declared is not None else seen
    if reward_range is None:
        return None
    return return_interval(*clip_reward_range(*reward_range, reward_clip), gamma)


def old_excess(q_max: float, q_min: float, interval: tuple[float, float]) -> float:
    if not (math.isfinite(q_max) and math.isfinite(q_min)):
        return math.inf
    low, high = interval
    return max(q_max - high, low - q_min, 0.0) / max(high - low, OLD_MIN_WIDTH)


# ---- one run, in a worker process ---------------------------------------------------------------


class _BothStopped(Exception):
    """Raised from the report callback to end a runaway run once both rules have stopped it."""


def _nanmax(values: list[float]) -> float:
    finite_or_inf = [value for value in values if not math.isnan(value)]
    return max(finite_or_inf) if finite_or_inf else math.nan


def snapshot_sources(directory: Path) -> str:
    """Copy the project's packages into ``directory``; return a sha256 over their .py files."""
    digest = hashlib.sha256()
    for package in SNAPSHOT_PACKAGES:
        shutil.copytree(REPO / package, directory / package, ignore=shutil.ignore_patterns("__pycache__"))
        for path in sorted((directory / package).rglob("*.py")):
            digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def run_one(spec: dict[str, Any], max_steps: int | None) -> dict[str, Any]:
    import torch

    import study.trial
    from study import metrics as m
    from study.config import build_trial_config
    from study.guard import GuardConfig, GuardState, guard_step

    torch.set_num_threads(1)
    budget = min(spec["budget"], max_steps) if max_steps else spec["budget"]
    base = {
        "env": spec["env"],
        "env_settings": spec["env_settings"],
        "steps": budget,
        "seed": spec["seed"],
        "eval_every": budget,
        "eval_episodes": 1,
        "report_every": REPORT_EVERY,
        "checkpoint_every": budget,
        "guard": {"enabled": False},
        "device": "cpu",
    }
    cfg = build_trial_config(base, spec["overrides"])

    # The ranges the trial passes to q_interval for each report (called just before on_report).
    captured: dict[str, Any] = {}
    real_q_interval = study.trial.q_interval

    def capturing_q_interval(declared, seen, gamma, reward_clip):
        captured.update(declared=declared, seen=seen, gamma=gamma, reward_clip=reward_clip)
        return real_q_interval(declared, seen, gamma, reward_clip)

    study.trial.q_interval = capturing_q_interval

    guard_cfg = GuardConfig()
    rules = {rule: {"state": GuardState(), "stop_step": None, "reason": None, "ratio_at_stop": None,
                    "q_max_at_stop": None, "q1_at_stop": None} for rule in ("new", "old")}
    trace: list[dict[str, Any]] = []

    def on_report(report: dict[str, float], _checkpoint: Any) -> None:
        step = int(report[m.ENV_STEPS])
        q_max, q_min, q1 = report[m.ACTOR_Q_MAX], report[m.ACTOR_Q_MIN], report["train/q1_value"]
        new_ex = report[m.GUARD_EXCESS]
        old_iv = old_interval(captured.get("declared"), captured.get("seen"), cfg.agent.gamma, cfg.agent.reward_clip)
        # Judged exactly when the new rule judges: after the first actor step, once a reward is known.
        old_ex = math.nan if (math.isnan(new_ex) or old_iv is None) else old_excess(q_max, q_min, old_iv)
        for rule, excess in (("new", new_ex), ("old", old_ex)):
            entry = rules[rule]
            entry["state"], verdict = guard_step(entry["state"], excess, guard_cfg)
            if verdict is not None and entry["stop_step"] is None:
                entry.update(stop_step=step, reason=verdict, q_max_at_stop=q_max, q1_at_stop=q1,
                             ratio_at_stop=(q_max / q1) if q1 and math.isfinite(q1) else math.nan)
        trace.append({
            "step": step, "q_max": q_max, "q_min": q_min, "q1": q1,
            "seen": captured.get("seen"), "declared": captured.get("declared"),
            "interval_new": (report["guard/q_low"], report["guard/q_high"]), "interval_old": old_iv,
            "excess_new": new_ex, "excess_old": old_ex,
        })
        if spec["runaway"] and all(entry["stop_step"] is not None for entry in rules.values()):
            raise _BothStopped

    started = time.perf_counter()
    out_dir = Path(tempfile.mkdtemp(prefix="guard_interval-"))
    ended = "budget"
    try:
        study.trial.run_trial(cfg, out_dir, on_report=on_report, progress=False, tensorboard=False,
                              stop_on_guard=False)
    except _BothStopped:
        ended = "both_stopped"
    finally:
        study.trial.q_interval = real_q_interval
        shutil.rmtree(out_dir, ignore_errors=True)
    wall = time.perf_counter() - started

    def series(key: str) -> list[float]:
        return [row[key] for row in trace]

    finite = [v for v in series("q_max") + series("q_min") if math.isfinite(v)]
    q1_abs = [abs(v) for v in series("q1") if math.isfinite(v)]
    last = trace[-1] if trace else {}
    record = {
        "name": spec["name"], "arm": spec["arm"], "env": spec["env"], "seed": spec["seed"],
        "budget": budget, "overrides": spec["overrides"], "runaway_arm": spec["runaway"],
        "steps_run": last.get("step"), "ended": ended, "wall_s": round(wall, 1),
        "code_from": str(Path(study.trial.__file__).parent.parent),
        "declared_range": last.get("declared"), "seen_range_final": last.get("seen"),
        "interval_new_final": last.get("interval_new"), "interval_old_final": last.get("interval_old"),
        "max_excess_new": _nanmax(series("excess_new")), "max_excess_old": _nanmax(series("excess_old")),
        "max_actor_q": max((v for v in series("q_max") if math.isfinite(v)), default=math.nan),
        "max_abs_actor_q": max((abs(v) for v in finite), default=math.nan),
        "max_abs_q1": max(q1_abs, default=math.nan),
        "any_non_finite_q": any(not math.isfinite(v) for v in series("q_max") + series("q_min")
                                if not math.isnan(v)),
    }
    for rule, entry in rules.items():
        record[f"stop_{rule}"] = {key: value for key, value in entry.items() if key != "state"}
    record["trace"] = trace
    return json_safe(record)


def _worker(args: tuple[dict[str, Any], int | None]) -> dict[str, Any]:
    spec, max_steps = args
    try:
        return run_one(spec, max_steps)
    except Exception as err:  # report it in the table rather than lose the other runs
        import traceback

        return {"name": spec["name"], "arm": spec["arm"], "env": spec["env"], "seed": spec["seed"],
                "error": f"{err.__class__.__name__}: {err}", "traceback": traceback.format_exc()}


# ---- the table ----------------------------------------------------------------------------------


def _stop(entry: dict[str, Any]) -> str:
    return "-" if entry["stop_step"] is None else f"{entry['stop_step']} {entry['reason']}"


def _interval(value: Any) -> str:
    return "-" if not value else f"[{table_number(value[0])}, {table_number(value[1])}]"


def table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| run | env | steps run | stop NEW | stop OLD | max excess NEW | max excess OLD | max actor Q "
        "| max abs actor Q | max abs q1 | actor_q_max/q1 at stop NEW | at stop OLD | interval NEW (last) "
        "| interval OLD | seen rewards (last) |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['env']} | error: {r['error']} |" + " |" * 12)
            continue
        lines.append(
            f"| {r['name']} | {r['env']} | {r['steps_run']} | {_stop(r['stop_new'])} | {_stop(r['stop_old'])} "
            f"| {table_number(r['max_excess_new'])} | {table_number(r['max_excess_old'])} | {table_number(r['max_actor_q'])} "
            f"| {table_number(r['max_abs_actor_q'])} | {table_number(r['max_abs_q1'])} "
            f"| {table_number(r['stop_new']['ratio_at_stop'])} | {table_number(r['stop_old']['ratio_at_stop'])} "
            f"| {_interval(r['interval_new_final'])} | {_interval(r['interval_old_final'])} "
            f"| {_interval(r['seen_range_final'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "guard_interval.json")
    parser.add_argument("--md", type=Path, default=None, help="markdown table (default: beside --out, .md)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=None, help="cap every budget (multiple of 500)")
    parser.add_argument("--only", action="append", default=[], help="keep runs whose name contains this")
    args = parser.parse_args()
    md_path = args.md or args.out.with_suffix(".md")

    specs = [s for s in run_specs() if not args.only or any(key in s["name"] for key in args.only)]
    snapshot_dir = Path(tempfile.mkdtemp(prefix="guard_interval-src-"))
    code_sha256 = snapshot_sources(snapshot_dir)
    os.environ[SNAPSHOT_ENV] = str(snapshot_dir)  # inherited by the spawned workers
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    context = mp.get_context("spawn")
    with context.Pool(args.workers, maxtasksperchild=1) as pool:
        for record in pool.imap_unordered(_worker, [(spec, args.max_steps) for spec in specs]):
            records.append(record)
            brief = record.get("error") or (
                f"{record['steps_run']} steps, {record['wall_s']} s, stop new {_stop(record['stop_new'])}, "
                f"old {_stop(record['stop_old'])}")
            print(f"[{time.perf_counter() - started:6.0f} s] {record['name']}: {brief}", flush=True)
    wall = time.perf_counter() - started
    shutil.rmtree(snapshot_dir, ignore_errors=True)
    order = {spec["name"]: index for index, spec in enumerate(run_specs())}
    records.sort(key=lambda r: (["control", "ddpg_unclipped", "healthy_pendulum", "healthy_drive",
                                 "healthy_halfcheetah", "zero_reward"].index(r["arm"]), r["seed"], order[r["name"]]))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": " ".join(sys.argv), "wall_s": round(wall, 1), "workers": args.workers,
               "max_steps": args.max_steps, "code_sha256": code_sha256,
               "code_snapshot_of": str(REPO), "guard": {"tolerance": 0.1, "patience": 2},
               "report_every": REPORT_EVERY, "runs": records}
    args.out.write_text(json.dumps(payload, indent=1))
    text = table(records)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(
        f"Q guard interval rule, OLD vs NEW, on the same runs (tolerance 0.1, patience 2, report every "
        f"{REPORT_EVERY}); wall {wall:.0f} s on {args.workers} workers.\n\n{text}\n"
    )
    print(text)
    print(f"wall {wall:.0f} s; records: {args.out}; table: {md_path}")


if __name__ == "__main__":
    main()
