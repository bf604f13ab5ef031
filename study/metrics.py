"""The metric names: one contract for TensorBoard, Ray Tune and MLflow (see DESIGN.md).

They keep the names the CARLA diagnostics used, so old and new runs compare. Every report carries
every key (NaN where a value is not available yet): Tune aborts ``fit()`` on a report that lacks
the scheduler's metric, and a fixed schema keeps MLflow's and TensorBoard's plots aligned.
"""

from __future__ import annotations

import math
from typing import Any

ENV_STEPS = "env_steps"
EVAL_RETURN = "eval/return_mean"
ACTOR_Q_MAX = "debug/actor_q_max"
ACTOR_Q_MIN = "debug/actor_q_min"
GUARD_EXCESS = "guard/actor_q_excess"
GUARD_STRIKES = "guard/strikes"  # consecutive offending reports, counted (and checkpointed) by the trial


def _stats(prefix: str, names: tuple[str, ...] = ("max", "min", "std")) -> list[str]:
    return [f"{prefix}_{name}" for name in names]


# Produced by the agent's update step (agents.TD3.update(diagnostics=True)).
AGENT_KEYS: tuple[str, ...] = (
    "train/actor_loss",
    "train/critic_loss",
    "train/q1_value",
    "train/q2_value",
    *_stats("debug/q1"),
    *_stats("debug/q2"),
    *_stats("debug/target_q", ("mean", "max", "min", "std")),
    "debug/td_error_q1",
    "debug/td_error_q2",
    *_stats("debug/actor_q", ("mean", "max", "min", "std")),
    *_stats("debug/reward", ("mean", "max", "min", "std")),
    "debug/done_ratio",
    "debug/effective_discount",
    "gradients/actor_cnn_norm",
    "gradients/actor_mlp_norm",
    "gradients/critic_cnn_norm",
    "gradients/critic_mlp_norm",
    "alerts/gradient_explosion_warning",
    "alerts/gradient_explosion_critical",
    "debug/action_gap",
    "debug/actor_saturation",
)

# Produced by the trial loop.
TRIAL_KEYS: tuple[str, ...] = (
    ENV_STEPS,
    "train/episode_return",
    "train/episode_length",
    EVAL_RETURN,
    "eval/return_std",
    "guard/q_low",
    "guard/q_high",
    GUARD_EXCESS,
    GUARD_STRIKES,
    "guard/actor_to_buffer_q_ratio",
    "perf/env_steps_per_s",
    "perf/updates_per_s",
)

REPORT_KEYS: tuple[str, ...] = TRIAL_KEYS + AGENT_KEYS


def complete_report(values: dict[str, float]) -> dict[str, float]:
    """Every report key, in a fixed order, NaN where ``values`` has none."""
    return {key: float(values.get(key, math.nan)) for key in REPORT_KEYS}


def tensorboard_scalars(report: dict[str, Any]) -> dict[str, float]:
    """The report values a TensorBoard curve can show: finite numbers, ``env_steps`` being the x axis."""
    scalars = {}
    for key in REPORT_KEYS:
        value = report.get(key)
        if key != ENV_STEPS and isinstance(value, (int, float)) and math.isfinite(value):
            scalars[key] = float(value)
    return scalars
