"""The metric names: one contract for TensorBoard, Ray Tune and MLflow (see DESIGN.md).

They keep the names the CARLA diagnostics used, so old and new runs compare. The agent's metrics
are named where they are produced (``agents.diagnostics``); the trial loop's are named here. Every
report carries every key (NaN where a value is not available yet): Tune aborts ``fit()`` on a
report that lacks the scheduler's metric, and a fixed schema keeps MLflow's and TensorBoard's plots
aligned.
"""

from __future__ import annotations

import math
from typing import Any

from agents.diagnostics import ACTOR_Q_MAX, ACTOR_Q_MEAN, ACTOR_Q_MIN, AGENT_KEYS, Q1_VALUE

__all__ = ["ACTOR_Q_MAX", "ACTOR_Q_MEAN", "ACTOR_Q_MIN", "AGENT_KEYS", "Q1_VALUE"]  # re-exported for the study

ENV_STEPS = "env_steps"  # the time axis of every curve and ASHA's time attribute
EPISODE_RETURN, EPISODE_LENGTH = "train/episode_return", "train/episode_length"
EVAL_RETURN, EVAL_RETURN_STD = "eval/return_mean", "eval/return_std"
EVAL_STEP = "eval/env_steps"  # the step the reported evaluation ran at: reports repeat it until the next
Q_LOW, Q_HIGH = "guard/q_low", "guard/q_high"  # the interval every return lies in
GUARD_EXCESS = "guard/actor_q_excess"  # how far actor-path Q lies outside it, in widths; NaN: not judged
GUARD_STRIKES = "guard/strikes"  # consecutive offending reports, counted (and checkpointed) by the trial
ACTOR_TO_BUFFER_Q = "guard/actor_to_buffer_q_ratio"
ENV_STEPS_PER_S, UPDATES_PER_S = "perf/env_steps_per_s", "perf/updates_per_s"

# Produced by the trial loop.
TRIAL_KEYS: tuple[str, ...] = (
    ENV_STEPS, EPISODE_RETURN, EPISODE_LENGTH, EVAL_RETURN, EVAL_RETURN_STD, EVAL_STEP, Q_LOW, Q_HIGH, GUARD_EXCESS,
    GUARD_STRIKES, ACTOR_TO_BUFFER_Q, ENV_STEPS_PER_S, UPDATES_PER_S,
)  # fmt: skip

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
