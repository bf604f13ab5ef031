"""The TD3 paper's published return at any evaluation step, read from the authors' learning curves.

The study file ``search_spaces/td3_paper_ablation.yaml`` cites two kinds of published figure: the
paper's Table 2 (Fujimoto, van Hoof, Meger 2018, ICML: each arm's return averaged over the last 10
evaluations of 10 trials of 1M steps) and TD3's own evaluation curves, which the authors publish per
seed in https://github.com/sfujim/TD3 ``learning_curves/`` (201 evaluations per file, one every
5,000 env steps from step 0, each the mean return of 10 episodes without exploration noise). This
script turns the curves into the figure the study compares at its own budget, and first checks that
they are the runs of Table 2: the mean over seeds of the last 10 evaluations must give Table 2's TD3
row (9532.99 on HalfCheetah, which it does to the published two decimals).

    git clone https://github.com/sfujim/TD3 /tmp/TD3    # learning_curves/ unchanged since June 2018
    PYTHONPATH=. python bench/td3_paper_reference.py --curves /tmp/TD3/learning_curves --step 100000

Prints a Markdown table (bench/results/td3_paper_reference.md holds the one the study file cites).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

EVAL_EVERY = 5_000  # env steps between two evaluations (sfujim/TD3 README)
LAST_EVALUATIONS = 10  # Table 2 averages each trial's last 10 evaluations
# Table 2's TD3 row as published, to check the curves against (the paper's columns; its Walker2d
# curves live in the folder "Walker").
TABLE_2_TD3 = {"HalfCheetah": 9532.99, "Hopper": 3304.75, "Walker": 4565.24, "Ant": 4185.06}


def last_evaluations_mean(curves: np.ndarray) -> float:
    """Table 2's statistic: per trial the mean of its last 10 evaluations, then the mean over trials."""
    return float(curves[:, -LAST_EVALUATIONS:].mean(axis=1).mean())


def at_step(curves: np.ndarray, step: int) -> dict[str, float]:
    """The published evaluation at ``step`` across trials: mean, sample std (ddof 1), min, max."""
    if step % EVAL_EVERY or not 0 <= step // EVAL_EVERY < curves.shape[1]:
        raise ValueError(f"step {step}: the curves hold evaluations at multiples of {EVAL_EVERY} up to "
                         f"{(curves.shape[1] - 1) * EVAL_EVERY}")
    values = curves[:, step // EVAL_EVERY]
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)), "min": float(values.min()),
            "max": float(values.max()), "trials": len(values)}


def load_curves(folder: Path) -> np.ndarray:
    """One row per seed file (``TD3_<env>_<seed>.npy``), in seed order."""
    files = sorted(folder.glob("TD3_*_*.npy"), key=lambda path: int(path.stem.rsplit("_", 1)[1]))
    if not files:
        raise FileNotFoundError(f"no TD3_*_<seed>.npy in {folder}")
    return np.stack([np.load(path) for path in files])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--curves", type=Path, required=True, help="sfujim/TD3's learning_curves folder")
    parser.add_argument("--step", type=int, action="append", help="env step(s) to read (default 100000)")
    args = parser.parse_args()
    steps = args.step or [100_000]
    print("| curves | files | last 10 evaluations, mean over trials | Table 2 TD3 | step | mean | std (ddof 1) | min | max |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for env, published in TABLE_2_TD3.items():
        curves = load_curves(args.curves / env)
        check = last_evaluations_mean(curves)
        for step in steps:
            row = at_step(curves, step)
            print(f"| {env} | {len(curves)} | {check:.2f} | {published:.2f} | {step:,} | {row['mean']:.2f} | "
                  f"{row['std']:.2f} | {row['min']:.2f} | {row['max']:.2f} |")


if __name__ == "__main__":
    main()
