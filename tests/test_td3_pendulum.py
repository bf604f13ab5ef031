"""TD3 learns Pendulum-v1 (Stable-Baselines3's TD3 reaches about -150 to -200), with its defaults and
with a LayerNorm critic."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from study.config import build_trial_config
from study.trial import run_trial

SEEDS = range(5)


def _train(seed: int, out: Path, steps: int = 15_000, agent: dict[str, Any] | None = None) -> dict:
    cfg = build_trial_config(
        {"env": "Pendulum-v1", "steps": steps, "seed": seed, "eval_every": 5_000, "agent": agent or {}}
    )
    return run_trial(cfg, out / f"seed{seed}", progress=False)


@pytest.mark.slow
def test_td3_defaults_reach_minus_300_on_pendulum_in_4_of_5_seeds(tmp_path: Path) -> None:
    with ProcessPoolExecutor(max_workers=2) as pool:
        summaries = list(pool.map(_train, SEEDS, [tmp_path] * len(SEEDS)))
    returns = [summary["final_return"] for summary in summaries]
    print("eval/return_mean per seed:", [round(value, 1) for value in returns])
    assert sum(value >= -300 for value in returns) >= 4, returns
    # Healthy runs: the guard must not have stopped any of them.
    assert [summary["stop_reason"] for summary in summaries] == ["completed"] * len(SEEDS)


@pytest.mark.slow
def test_td3_with_a_layer_norm_critic_reaches_minus_300_on_pendulum(tmp_path: Path) -> None:
    """One seed, 6,000 steps (about 40 s on one core): seeds 0 to 3 reached -130 there, a random
    policy about -1,400. The run checkpoints at 5,000 steps, so the norms go through a save too."""
    summary = _train(0, tmp_path, steps=6_000, agent={"critic_layer_norm": True})
    print(f"eval/return_mean {summary['final_return']:.1f}")
    assert summary["final_return"] >= -300
    assert summary["stop_reason"] == "completed"
