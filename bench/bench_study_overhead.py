"""What Ray Tune and MLflow cost a trial: ``study.run`` against ``study.train``, side by side.

    PYTHONPATH=. python bench/bench_study_overhead.py [--env Pendulum-v1] [--steps 5000] [--reps 2]

1. Overhead: the same trial (same env, config, steps, report cadence) as a whole process through
   ``python -m study.train`` and through ``python -m study.run`` (Ray started and stopped, Tune,
   the scheduler, MLflow on SQLite), interleaved A B A B so both see the same machine load.
   Reported: process wall times and their ratio, and the trial's own time inside each (the loop
   in ``study.train``; Tune's ``time_total_s``), which separates Ray's fixed start-up cost from
   the per-report cost.
2. Scaling: two trials at once through ``study.run`` (two seeds, one CPU each) against one trial
   alone: aggregate env steps per second, and their ratio (target >= 1.8 on two cores).

Not part of the test suite: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def study_file(directory: Path, env: str, steps: int, report_every: int, seeds: list[int]) -> Path:
    data = {
        "name": "bench",
        "env": env,
        "env_settings": {"observation": "vector"} if env == "drive" else {},
        "design": "one_at_a_time",
        "factors": {"tau": [0.005]},  # the base value only: one arm, the baseline
        "seeds": seeds,
        "budget": {"steps": steps, "eval_every": steps, "eval_episodes": 2, "report_every": report_every,
                   "checkpoint_every": steps},
        "scheduler": {"asha": False, "grace_period": steps},
    }
    path = directory / f"bench-{len(seeds)}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def timed(command: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_train(args: argparse.Namespace, out: Path) -> dict[str, float]:
    command = [sys.executable, "-m", "study.train", "--env", args.env, "--steps", str(args.steps), "--quiet",
               "--out", str(out), "--set", f"report_every={args.report_every}", "--set", f"eval_every={args.steps}",
               "--set", f"checkpoint_every={args.steps}", "--set", "eval_episodes=2"]
    if args.env == "drive":
        command += ["--set", "drive.observation=vector"]
    wall = timed(command)
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": wall, "trial_s": summary["wall_time_s"]}


def run_study(spec: Path, storage: Path) -> dict[str, Any]:
    wall = timed([sys.executable, "-m", "study.run", "--space", str(spec), "--storage", str(storage)])
    trials = []
    for path in (storage / "bench").glob("*/result.json"):
        last = json.loads(path.read_text().splitlines()[-1])
        trials.append({"steps": last["env_steps"], "trial_s": last["time_total_s"]})
    return {"wall_s": wall, "trials": trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--steps", type=int, default=5_000)
    parser.add_argument("--report-every", type=int, default=500)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one = study_file(root, args.env, args.steps, args.report_every, [0])
        two = study_file(root, args.env, args.steps, args.report_every, [0, 1])
        train, study = [], []
        for rep in range(args.reps):  # interleaved: A B A B
            train.append(run_train(args, root / f"train-{rep}"))
            result = run_study(one, root / f"study-{rep}")
            study.append({"wall_s": result["wall_s"], "trial_s": result["trials"][0]["trial_s"]})
            print(f"rep {rep}: study.train {train[-1]['wall_s']:.1f} s (loop {train[-1]['trial_s']:.1f} s) | "
                  f"study.run {study[-1]['wall_s']:.1f} s (trial {study[-1]['trial_s']:.1f} s)", flush=True)
        pair = run_study(two, root / "pair")

    def mean(rows: list[dict[str, float]], key: str) -> float:
        return sum(row[key] for row in rows) / len(rows)

    train_wall, study_wall = mean(train, "wall_s"), mean(study, "wall_s")
    train_loop, study_trial = mean(train, "trial_s"), mean(study, "trial_s")
    single_rate = args.steps / study_trial
    pair_rate = sum(t["steps"] for t in pair["trials"]) / max(t["trial_s"] for t in pair["trials"])
    reports = args.steps // args.report_every
    print(f"\n{args.env}, {args.steps} env steps, a report every {args.report_every} ({reports} reports), "
          f"{args.reps} reps, cpu_count={os.cpu_count()}")
    print(f"process wall: study.train {train_wall:.1f} s, study.run {study_wall:.1f} s -> "
          f"x{study_wall / train_wall:.3f} ({100 * (study_wall / train_wall - 1):+.1f}%)")
    print(f"trial only:   study.train loop {train_loop:.1f} s, Tune trial {study_trial:.1f} s -> "
          f"x{study_trial / train_loop:.3f} ({100 * (study_trial / train_loop - 1):+.1f}%)")
    fixed = study_wall - train_wall - (study_trial - train_loop)
    print(f"fixed cost of study.run (Ray start/stop, Tune set-up, MLflow store): {fixed:.1f} s per study")
    print(f"scaling: one trial {single_rate:.0f} env steps/s, two at once {pair_rate:.0f} env steps/s "
          f"-> x{pair_rate / single_rate:.2f}")


if __name__ == "__main__":
    main()
