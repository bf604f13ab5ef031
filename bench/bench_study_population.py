"""A whole study two ways, side by side: each seed a Tune trial (``execution: per_seed``) against each
arm's seeds as one population trial (``execution: population``).

    PYTHONPATH=. python bench/bench_study_population.py [--space default] [--smoke] [--order per_seed population]

Both ways run the same study file through ``python -m study.run`` as a user runs it (Ray started
with every core, MLflow on SQLite, the report at the end), one after the other, in ``--order``.
Reported: each way's wall time (process start to exit) and the ratio, and whether the two stores
hold the same results: the trial table (outcome, stop step, every summary figure, per arm and seed)
and the curves (every reported value the analysis reads, per arm, seed and env step), compared
exactly, and the verdict lines ``study.run`` printed. On CPU a member's run is its single run bit for
bit, so any difference is a bug. Writes ``bench/results/study_population.{json,md}`` (``--out``).

Not part of the test suite: times depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis.load import StudyResults, load_study
from study.spec import SEARCH_SPACES

REPO = Path(__file__).resolve().parent.parent
WAYS = ("per_seed", "population")


def run_way(space: Path, storage: Path, way: str, smoke: bool) -> dict[str, Any]:
    """One ``study.run`` of the study file with ``execution: way``; its wall time and console."""
    data = yaml.safe_load(space.read_text())
    data["execution"] = way
    path = storage.parent / f"{way}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    command = [sys.executable, "-m", "study.run", "--space", str(path), "--storage", str(storage), *(["--smoke"] if smoke else [])]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{way}: study.run exited {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    print(f"{way}: {wall:.1f} s", flush=True)
    return {"wall_s": wall, "out": done.stdout, "study": data["name"]}


def verdicts(out: str) -> list[str]:
    """The verdict lines ``study.run`` printed (after its header line)."""
    if "Verdicts (" not in out:
        return []
    lines = out.split("Verdicts (", 1)[1].splitlines()[1:]
    return [line.strip() for line in lines[: lines.index("")] if line.strip()]


def by_seed(results: StudyResults) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trial and curve tables without Tune's trial ids, in arm, seed, step order."""
    trials = results.trials.drop(columns="trial_id").sort_values(["arm", "seed"]).reset_index(drop=True)
    curves = results.curves.drop(columns="trial_id").sort_values(["arm", "seed", "env_steps"]).reset_index(drop=True)
    return trials, curves


def differences(a: pd.DataFrame, b: pd.DataFrame) -> int:
    """Cells that differ (NaN equals NaN); every cell when the shapes or columns differ."""
    if a.shape != b.shape or list(a.columns) != list(b.columns):
        return max(a.size, b.size)
    same = (a == b) | (a.isna() & b.isna())
    return int((~same).to_numpy().sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="default", help="a study file: a name in search_spaces/ or a path")
    parser.add_argument("--smoke", action="store_true", help="its smoke section applied")
    parser.add_argument("--order", nargs=2, choices=WAYS, default=list(WAYS))
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "study_population")
    parser.add_argument("--keep", type=Path, default=None, help="keep both ways' results in this folder (default: removed)")
    args = parser.parse_args()
    space = Path(args.space) if Path(args.space).is_file() else SEARCH_SPACES / f"{args.space}.yaml"

    with tempfile.TemporaryDirectory(prefix="bench-study-population-") as scratch:
        runs, tables = {}, {}
        for way in args.order:
            storage = (args.keep or Path(scratch)) / way / "results"
            storage.mkdir(parents=True)
            runs[way] = run_way(space, storage, way, args.smoke)
            tables[way] = by_seed(load_study(storage, runs[way]["study"]))

    (trials_a, curves_a), (trials_b, curves_b) = tables["per_seed"], tables["population"]
    result = {
        "date": datetime.date.today().isoformat(),
        "space": str(space.relative_to(REPO) if space.is_relative_to(REPO) else space),
        "smoke": args.smoke,
        "order": args.order,
        "cores": len(os.sched_getaffinity(0)),
        "note": args.note,
        "wall_s": {way: round(runs[way]["wall_s"], 1) for way in WAYS},
        "speedup": round(runs["per_seed"]["wall_s"] / runs["population"]["wall_s"], 3),
        "trials": len(trials_a),
        "trial_table_cells_differing": differences(trials_a, trials_b),
        "curve_cells_differing": differences(curves_a, curves_b),
        "verdicts_equal": verdicts(runs["per_seed"]["out"]) == verdicts(runs["population"]["out"]),
        "verdicts": verdicts(runs["population"]["out"]),
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# {result['space']}{' (smoke)' if args.smoke else ''}: per-seed trials against populations",
        "",
        f"{result['date']}, {result['cores']} cores, order {' then '.join(args.order)}. {args.note}".rstrip(),
        "",
        "| way | wall time (s) | x per-seed |",
        "|---|---:|---:|",
        f"| per_seed | {result['wall_s']['per_seed']:.1f} | 1 |",
        f"| population | {result['wall_s']['population']:.1f} | {result['speedup']:.2f}x |",
        "",
        f"Same results: {result['trials']} trials; trial-table cells differing: {result['trial_table_cells_differing']}; "
        f"curve cells differing: {result['curve_cells_differing']}; verdict lines equal: {result['verdicts_equal']}.",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"study as populations: {result['speedup']:.2f}x per-seed trials (cpu)")


if __name__ == "__main__":
    main()
