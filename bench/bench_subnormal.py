"""Training speed with subnormal floats flushed to zero (``study.trial.configure_torch``) against
the same loop without, on a critic the default study regularizes (critic L2 0.01).

The weights and Adam moments of hidden units that stop receiving gradient decay towards zero and
pass through the subnormal range (below 1.2e-38), where a CPU's multiply runs many times slower;
the default study's L2 and weight-decay arms ran 5x slower than their baseline before trials
flushed them. Each mode is a whole process on ``drive`` (vector observations, TD3's defaults but
``critic_l2=0.01``, one torch thread), the minimal trial loop (act, step, observe, update); per
500-step window it records updates/s, and at the end the share of the critic's weights and of
Adam's first moments that is subnormal. The modes run one after the other, twice (A B A B), so
both see the same machine noise.

    PYTHONPATH=. python bench/bench_subnormal.py [--steps 4000] [--rounds 2]

Ends with the line ``flushed subnormals: X.XXx unflushed (updates/s over the last N steps)``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WINDOW = 500
LAST_STEPS = 1_000  # the ratio's window: where the unflushed run has slowed down


def worker(flush: bool, steps: int, seed: int) -> dict[str, Any]:
    import torch

    import envs
    from agents import TD3, TD3Config

    torch.set_num_threads(1)
    torch.set_flush_denormal(flush)
    env = envs.make("drive", {"observation": "vector"})
    agent = TD3(env.observation_space, env.action_space, TD3Config(critic_l2=0.01), device="cpu", seed=seed)
    obs, _ = env.reset(seed=seed)
    marks = {0: (time.perf_counter(), 0)}
    for step in range(1, steps + 1):
        action = agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        agent.observe(obs, action, float(reward), next_obs, terminated)
        agent.update(diagnostics=step % WINDOW == 0)
        obs = env.reset()[0] if terminated or truncated else next_obs
        if step % WINDOW == 0:
            marks[step] = (time.perf_counter(), agent.updates)
    windows = sorted(marks)
    rates = {end: (marks[end][1] - marks[start][1]) / (marks[end][0] - marks[start][0]) for start, end in zip(windows, windows[1:])}
    last = [step for step in windows if step >= steps - LAST_STEPS]
    (t0, u0), (t1, u1) = marks[last[0]], marks[last[-1]]
    return {
        "flush": flush,
        "updates_per_s_by_window": rates,
        "last_updates_per_s": (u1 - u0) / (t1 - t0),
        "subnormal_critic_weights": _subnormal_share([p for p in agent.nets.critic.parameters() if p.ndim > 1]),
        "subnormal_adam_exp_avg": _subnormal_share([s["exp_avg"] for s in agent.optimizers.critic.state.values()]),
    }


def _subnormal_share(tensors: list[Any]) -> float:
    """The share of the entries that are subnormal: nonzero and below float32's smallest normal."""
    import torch

    tiny = torch.finfo(torch.float32).tiny
    total = sum(t.numel() for t in tensors)
    subnormal = sum(int(((t != 0) & (t.abs() < tiny)).sum()) for t in tensors)
    return subnormal / total


def run_worker(flush: bool, steps: int, seed: int) -> dict[str, Any]:
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    cmd = [sys.executable, __file__, "--worker", "flush" if flush else "keep", "--steps", str(steps), "--seed", str(seed)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=["flush", "keep"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker == "flush", args.steps, args.seed)))
        return
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for _ in range(args.rounds):
        for flush in (False, True):
            runs[flush].append(run_worker(flush, args.steps, args.seed))
    print(f"drive, critic_l2=0.01, seed {args.seed}, {args.steps:,} steps, {args.rounds} rounds; updates/s per {WINDOW}-step window:")
    for flush in (False, True):
        for run in runs[flush]:
            rates = " ".join(f"{rate:.0f}" for rate in run["updates_per_s_by_window"].values())
            print(f"  {'flushed  ' if flush else 'unflushed'} {rates}   subnormal at the end: critic weights "
                  f"{run['subnormal_critic_weights']:.1%}, Adam first moments {run['subnormal_adam_exp_avg']:.1%}")  # fmt: skip
    ratio = statistics.median(r["last_updates_per_s"] for r in runs[True]) / statistics.median(r["last_updates_per_s"] for r in runs[False])
    print(f"flushed subnormals: {ratio:.2f}x unflushed (updates/s over the last {LAST_STEPS:,} steps)")


if __name__ == "__main__":
    main()
