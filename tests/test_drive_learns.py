"""TD3 learns the embedded driving simulator: its return rises well above a random policy's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import envs
from study.config import build_trial_config
from study.trial import EVAL_SEED_OFFSET, run_trial

SETTINGS = {"observation": "vector"}
EVAL_EPISODES = 3


def random_policy_return(seed: int) -> float:
    """Mean return of uniform random actions on the evaluation episodes TD3 is scored on."""
    env = envs.make("drive", SETTINGS)
    rng = np.random.default_rng(seed)
    returns = []
    for episode in range(EVAL_EPISODES):
        env.reset(seed=EVAL_SEED_OFFSET + seed * 1_000 + episode)
        env.action_space.seed(int(rng.integers(1 << 31)))
        done, total = False, 0.0
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


@pytest.mark.slow
def test_td3_return_on_drive_rises_well_above_random(tmp_path: Path) -> None:
    cfg = build_trial_config(
        {"env": "drive", "env_settings": SETTINGS, "steps": 15_000, "seed": 0,
         "eval_every": 5_000, "eval_episodes": EVAL_EPISODES, "checkpoint_every": 5_000},
    )
    summary = run_trial(cfg, tmp_path, progress=False)
    baseline = random_policy_return(seed=0)
    print(f"random {baseline:.1f}, TD3 best eval {summary['best_return']:.1f}")
    assert summary["stop_reason"] == "completed"  # a healthy run: the guard must leave it alone
    assert summary["best_return"] > baseline + 200.0
