"""Env steps per second: the embedded driving simulator vs highway-env, side by side in one run.

    PYTHONPATH=. python bench/bench_drive_env.py [--seconds 5] [--rounds 3]

Every env is made with gymnasium.make (so each pays the same wrapper overhead), reset with a
seed, warmed up, then stepped with uniform random actions for a fixed wall-clock window,
resets included. Rounds are interleaved (A B C D, A B C D, ...) so that all peers see the
same load on a shared machine; the median is reported, with the ratio to highway-env's
`highway-fast-v0` (ContinuousAction, the fast variant of its highway task) taken within each
round. highway-v0 (its default, 50 vehicles, 15 simulation steps per action) is listed too.
The process is pinned to one CPU core where the OS allows it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable

import gymnasium
import numpy as np

import envs  # noqa: F401  (registers Drive-v0)

Peer = tuple[str, Callable[[], gymnasium.Env]]


def highway(env_id: str) -> Callable[[], gymnasium.Env]:
    def make() -> gymnasium.Env:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # highway-env imports pygame; no window here
        import highway_env  # noqa: F401  (registers highway-v0 and highway-fast-v0)

        return gymnasium.make(env_id, config={"action": {"type": "ContinuousAction"}})

    return make


PEERS: list[Peer] = [
    ("Drive-v0 image 3x64x64, 20 NPCs", lambda: gymnasium.make("Drive-v0", observation="image")),
    ("Drive-v0 vector, 20 NPCs", lambda: gymnasium.make("Drive-v0", observation="vector")),
    ("highway-fast-v0 ContinuousAction, 20 vehicles", highway("highway-fast-v0")),
    ("highway-v0 ContinuousAction, 50 vehicles", highway("highway-v0")),
]
REFERENCE = "highway-fast-v0 ContinuousAction, 20 vehicles"


def steps_per_second(make: Callable[[], gymnasium.Env], seconds: float, seed: int) -> tuple[float, int]:
    """Random-action steps per second (resets included) and the number of episodes that ended."""
    env = make()
    env.action_space.seed(seed)
    env.reset(seed=seed)
    for _ in range(5):  # warm-up: first-call allocations and caches
        env.step(env.action_space.sample())
    steps, episodes, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
        if terminated or truncated:
            env.reset()
            episodes += 1
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate, episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="wall-clock window per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all peers")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    warnings.filterwarnings("ignore")  # highway-env's deprecation chatter

    rates: dict[str, list[float]] = {name: [] for name, _ in PEERS}
    for round_index in range(args.rounds):
        for name, make in PEERS:
            rate, episodes = steps_per_second(make, args.seconds, seed=round_index)
            rates[name].append(rate)
            print(f"round {round_index + 1}  {name:<48} {rate:9.1f} steps/s  ({episodes} episodes ended)", flush=True)

    print(f"\nmedian of {args.rounds} rounds, {args.seconds:g} s each, one core; ratio = median over rounds of")
    print("(steps/s / highway-fast-v0's steps/s in the same round), so both sides of a ratio saw the same load:")
    for name, values in rates.items():
        ratio = statistics.median(v / r for v, r in zip(values, rates[REFERENCE]))
        print(f"  {name:<48} {statistics.median(values):9.1f} steps/s   x{ratio:7.1f} vs highway-fast-v0"
              f"   (min {min(values):.1f}, max {max(values):.1f})")
    print(f"  numpy {np.__version__}, gymnasium {gymnasium.__version__}")


if __name__ == "__main__":
    main()
