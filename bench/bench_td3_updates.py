"""TD3 gradient updates per second: this project's agent against Stable-Baselines3's TD3.

Both run as whole processes on Pendulum-v1 with one torch thread (a study runs one trial per
core), the same networks (256-256), batch 256, one update per env step, env steps included:
ours is the minimal loop a trial runs (act, step, observe, update) with diagnostics read every
500 steps; SB3 is ``TD3.learn``. Updates/s is measured after a warm-up, the runs alternate
(A B A B ...) so both see the same machine noise, and a 256x256 matrix product measured in the
same run turns the FLOPs of one update into an updates/s ceiling.

    PYTHONPATH=. python bench/bench_td3_updates.py [--rounds 2] [--steps 4000] [--device auto]

Needs ``pip install stable-baselines3`` (the ``bench`` extra). Runs unchanged on CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ENV_ID = "Pendulum-v1"
HIDDEN = (256, 256)
BATCH = 256
LEARNING_STARTS = 1_000
DIAGNOSTICS_EVERY = 500


def flops_per_update(obs_dim: int, action_dim: int, hidden: tuple[int, ...], batch: int, policy_delay: int) -> float:
    """Matrix-product FLOPs of one TD3 update (2 per multiply-add), elementwise work ignored.

    A layer in->out costs B*in*out multiply-adds forward, as much again for its weight gradient,
    and as much again for its input gradient (skipped for a first layer fed by data). Per update:
    target actor + both target critics forward; both critics forward and backward; and every
    ``policy_delay`` updates the actor forward and backward plus Q1 forward and its input
    gradients only (no critic weight gradients in the actor step).
    """

    def layers(n_in: int, n_out: int) -> list[int]:
        return [a * b for a, b in pairwise([n_in, *hidden, n_out])]

    actor, critic = layers(obs_dim, action_dim), layers(obs_dim + action_dim, 1)
    forward_a, forward_c = sum(actor), sum(critic)
    target = forward_a + 2 * forward_c
    critics = 2 * (2 * forward_c + forward_c - critic[0])
    actor_step = (2 * forward_a + forward_a - actor[0]) + 2 * forward_c
    return 2.0 * batch * (target + critics + actor_step / policy_delay)


# ---- workers (each in its own process) ---------------------------------------------------------


def _setup_worker() -> None:
    import torch

    torch.set_num_threads(1)


def worker_ours(steps: int, warmup: int, device: str, seed: int) -> dict[str, Any]:
    import gymnasium as gym

    from agents import TD3, TD3Config

    env = gym.make(ENV_ID)
    cfg = TD3Config(hidden_sizes=HIDDEN, batch_size=BATCH, learning_starts=LEARNING_STARTS)
    agent = TD3(env.observation_space, env.action_space, cfg, device=device, seed=seed)
    obs, _ = env.reset(seed=seed)
    marks: dict[int, tuple[float, float, int]] = {}
    for step in range(1, steps + 1):
        action = agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        agent.observe(obs, action, float(reward), next_obs, terminated)
        agent.update(diagnostics=step % DIAGNOSTICS_EVERY == 0)
        obs = env.reset()[0] if terminated or truncated else next_obs
        if step in (warmup, steps):
            _sync(agent.device.type)
            marks[step] = (time.perf_counter(), time.process_time(), agent.updates)
    return _rate(marks, warmup, steps) | {"device": agent.device.type}


def worker_sb3(steps: int, warmup: int, device: str, seed: int) -> dict[str, Any]:
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import TD3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import NormalActionNoise
    from stable_baselines3.common.preprocessing import get_action_dim

    marks: dict[int, tuple[float, float, int]] = {}

    class Marks(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps in (warmup, steps):
                _sync(self.model.device.type)
                marks[self.num_timesteps] = (time.perf_counter(), time.process_time(), self.model._n_updates)
            return True

    env = gym.make(ENV_ID)
    action_dim = get_action_dim(env.action_space)
    model = TD3(
        "MlpPolicy",
        env,
        learning_rate=3e-4,
        batch_size=BATCH,
        learning_starts=LEARNING_STARTS,
        action_noise=NormalActionNoise(np.zeros(action_dim), 0.1 * np.ones(action_dim)),
        policy_kwargs={"net_arch": list(HIDDEN)},
        device=device,
        seed=seed,
    )
    model.learn(total_timesteps=steps, callback=Marks())
    return _rate(marks, warmup, steps) | {"device": model.device.type}


def worker_matmul(device: str) -> dict[str, float]:
    """GFLOP/s of a 256x256 @ 256x256 float32 product, the size that dominates an update."""
    import torch

    from agents.agent import resolve_device

    dev = resolve_device(device)
    a, b = torch.randn(256, 256, device=dev), torch.randn(256, 256, device=dev)
    for _ in range(100):
        a @ b
    _sync(dev.type)
    n, start = 3_000, time.perf_counter()
    for _ in range(n):
        a @ b
    _sync(dev.type)
    return {"gflops": 2 * 256**3 * n / (time.perf_counter() - start) / 1e9}


def _sync(device_type: str) -> None:
    if device_type == "cuda":
        import torch

        torch.cuda.synchronize()


def _rate(marks: dict[int, tuple[float, float, int]], warmup: int, steps: int) -> dict[str, float]:
    """Updates per second of wall time, and per second of this process's CPU time (which other
    processes on a shared machine inflate less)."""
    (wall0, cpu0, u0), (wall1, cpu1, u1) = marks[warmup], marks[steps]
    return {"updates_per_s": (u1 - u0) / (wall1 - wall0), "updates_per_cpu_s": (u1 - u0) / (cpu1 - cpu0)}


# ---- driver --------------------------------------------------------------------------------------


def run_worker(kind: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One measurement in a fresh process with one thread for torch and its BLAS."""
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    cmd = [sys.executable, __file__, "--worker", kind, "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--device", args.device, "--seed", str(seed)]  # fmt: skip
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="A B pairs (ours, SB3), alternated")
    parser.add_argument("--steps", type=int, default=4_000, help="env steps per run (one update each after 1k)")
    parser.add_argument("--warmup", type=int, default=2_000, help="env step at which timing starts")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=["ours", "sb3", "matmul"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not LEARNING_STARTS < args.warmup < args.steps:
        parser.error(f"need {LEARNING_STARTS} (learning_starts) < --warmup < --steps")

    if args.worker:
        _setup_worker()
        if args.worker == "matmul":
            result = worker_matmul(args.device)
        else:
            worker = worker_ours if args.worker == "ours" else worker_sb3
            result = worker(args.steps, args.warmup, args.device, args.seed)
        print(json.dumps(result))
        return

    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "sb3": []}
    gflops: list[float] = []
    for r in range(args.rounds):
        gflops.append(run_worker("matmul", args, args.seed)["gflops"])
        for kind, results in runs.items():
            result = run_worker(kind, args, args.seed + r)
            results.append(result)
            print(
                f"round {r + 1}  {kind:4s}  {result['updates_per_s']:7.1f} updates/s  "
                f"({result['updates_per_cpu_s']:.1f} per CPU-second, {result['device']})",
                flush=True,
            )
    flops = flops_per_update(obs_dim=3, action_dim=1, hidden=HIDDEN, batch=BATCH, policy_delay=2)
    ceiling = statistics.median(gflops) * 1e9 / flops
    print(f"256x256 matmul: {statistics.median(gflops):.1f} GFLOP/s; one update {flops / 1e9:.3f} GFLOP "
          f"-> ceiling {ceiling:.0f} updates/s")  # fmt: skip
    for key, unit in (("updates_per_s", "updates/s"), ("updates_per_cpu_s", "updates per CPU-second")):
        ours, sb3 = ([run[key] for run in runs[kind]] for kind in ("ours", "sb3"))
        per_round = ", ".join(f"{a / b:.2f}" for a, b in zip(ours, sb3, strict=True))
        mid_ours, mid_sb3 = statistics.median(ours), statistics.median(sb3)
        print(f"{unit}: ours {mid_ours:.1f} ({mid_ours / ceiling:.0%} of ceiling), SB3 {mid_sb3:.1f}; "
              f"ours/SB3 {mid_ours / mid_sb3:.2f}x (per round {per_round})")  # fmt: skip

if __name__ == "__main__":
    main()
