"""How large the critic's gradient norm is in healthy runs: the level at which clipping acts.

    PYTHONPATH=. .venv/bin/python bench/critic_grad_norms.py --out bench/results/critic_grad_norms.json

A ``grad_clip_norm`` above every norm a healthy run sees changes nothing, and then the critic L2
penalty and coupled weight decay 2c are one treatment (README). This measures the critic's total
gradient norm before clipping (``gradients/critic_cnn_norm`` and ``gradients/critic_mlp_norm``,
combined) at every report of TD3-default runs through the project's trial loop
(``study.trial.run_trial``, guard on), after the first actor step, and prints its quantiles per
env, so a study file can clip at a level that binds in a share of healthy updates it states.
Configurations: drive/vector (the default study's env, 20 NPCs) seeds 0-1, 16,000 steps; Pendulum-v1
seeds 0-1, 15,000 steps. Runs go to two worker processes (one torch thread each). Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

RUNS = [("drive", {"observation": "vector"}, 16_000, seed) for seed in (0, 1)] + [
    ("Pendulum-v1", {}, 15_000, seed) for seed in (0, 1)
]


def critic_norms(env: str, settings: dict, steps: int, seed: int) -> list[float]:
    """The critic's total gradient norm at each report after the first actor step."""
    import torch

    from agents.diagnostics import CRITIC_CNN_NORM, CRITIC_MLP_NORM
    from study import metrics as m
    from study.config import build_trial_config
    from study.trial import run_trial

    torch.set_num_threads(1)
    cfg = build_trial_config({"env": env, "steps": steps, "seed": seed, "env_settings": settings}, [])
    norms: list[float] = []

    def on_report(report: dict[str, float], _: object) -> None:
        if math.isfinite(report[m.ACTOR_Q_MAX]):  # an actor step has happened: a learning critic
            norms.append(math.hypot(report[CRITIC_CNN_NORM], report[CRITIC_MLP_NORM]))

    with tempfile.TemporaryDirectory() as out:
        run_trial(cfg, Path(out), on_report=on_report, progress=False, tensorboard=False)
    return norms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench/results/critic_grad_norms.json"))
    parser.add_argument("--max-steps", type=int, default=None, help="cap every budget (a quick check)")
    args = parser.parse_args()
    runs = [(env, settings, min(steps, args.max_steps or steps), seed) for env, settings, steps, seed in RUNS]
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(critic_norms, *zip(*runs)))
    table = ["| env | seeds | reports | p10 | median | p90 | max |", "|---|---|---:|---:|---:|---:|---:|"]
    record = {}
    for env in dict.fromkeys(env for env, *_ in runs):
        norms = np.concatenate([r for (e, *_), r in zip(runs, results) if e == env])
        seeds = [seed for e, _, _, seed in runs if e == env]
        q = {k: float(np.quantile(norms, p)) for k, p in (("p10", 0.1), ("median", 0.5), ("p90", 0.9))}
        record[env] = {"seeds": seeds, "steps": runs[[e for e, *_ in runs].index(env)][2], "reports": len(norms),
                       **q, "max": float(norms.max()), "norms": norms.tolist()}
        table.append(f"| {env} | {seeds} | {len(norms)} | {q['p10']:.3g} | {q['median']:.3g} | {q['p90']:.3g} | {norms.max():.3g} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    text = "\n".join(["Critic gradient norm before clipping, TD3 defaults, every report after the first actor step", "", *table])
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
