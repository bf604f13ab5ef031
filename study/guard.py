"""The actor-path Q guard: pure functions, shared by ``study.train`` and the Ray scheduler.

With per-step rewards in [r_min, r_max] and discount gamma, every discounted return lies in a
known interval; a Q estimate outside it is not the value of any policy. TD3's actor climbs
Q1(s, actor(s)), so when the critic extrapolates badly on the actor's actions that value runs
away first (the CARLA run: buffer Q about 40 to 70 while actor-path Q reached 2.3M).

The guard measures how far the batch's actor-path Q (max and min) lies outside the interval as a
share of its width, and stops a trial that stays beyond a tolerance, or is non-finite, for
``patience`` consecutive reports. Defaults (tolerance 0.1, patience 2) come from DESIGN.md's
measurements: the worst healthy excess seen was 0.3% of the width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

StopReason = Literal["q_explosion", "non_finite"]
GUARD_STOPS: tuple[StopReason, ...] = get_args(StopReason)  # the outcomes that mean "diverged"

# A degenerate interval (all rewards equal so far, e.g. zero before a sparse reward arrives)
# would turn any approximation noise into an "explosion"; one reward unit is the smallest
# width the excess is measured against.
MIN_INTERVAL_WIDTH = 1.0


class GuardConfig(BaseModel):
    """When to stop a trial whose actor-path Q leaves the interval of possible returns."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="stop trials on the guard (metrics are logged either way)")
    tolerance: float = Field(0.1, gt=0, description="allowed excess, as a share of the interval's width")
    patience: int = Field(2, ge=1, description="consecutive offending reports before stopping")


def return_interval(r_min: float, r_max: float, gamma: float) -> tuple[float, float]:
    """Bounds on any discounted return when every reward lies in [r_min, r_max].

    The upper end is r_max / (1 - gamma) if r_max >= 0 (collect it forever) and r_max otherwise
    (the first reward is certain, later ones only lower it); symmetrically for the lower end.
    """
    if r_min > r_max:
        raise ValueError(f"reward range must have r_min <= r_max, got [{r_min}, {r_max}]")
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    horizon = 1.0 / (1.0 - gamma)
    high = r_max * horizon if r_max >= 0 else r_max
    low = r_min * horizon if r_min <= 0 else r_min
    return low, high


def clip_reward_range(r_min: float, r_max: float, reward_clip: float | None) -> tuple[float, float]:
    """The reward range the critic is trained on when rewards are clipped to [-c, c]."""
    if reward_clip is None:
        return r_min, r_max
    low, high = max(r_min, -reward_clip), min(r_max, reward_clip)
    if low > high:  # every reward lies beyond one clip bound: all clip to that bound
        low = high = -reward_clip if r_max < -reward_clip else reward_clip
    return low, high


def q_interval(
    declared: tuple[float, float] | None,
    seen: tuple[float, float] | None,
    gamma: float,
    reward_clip: float | None,
) -> tuple[float, float] | None:
    """The guard's interval: from the env's declared reward range, else the rewards seen so far.

    A Bellman backup on the buffer's data cannot leave the interval of the rewards it holds, so a
    Q outside it is extrapolation. Reward clipping, when on, tightens the range. None until any
    reward is known.
    """
    reward_range = declared if declared is not None else seen
    if reward_range is None:
        return None
    r_min, r_max = clip_reward_range(*reward_range, reward_clip)
    return return_interval(r_min, r_max, gamma)


def actor_q_excess(q_max: float, q_min: float, interval: tuple[float, float]) -> float:
    """How far the batch's actor-path Q lies outside the interval, as a share of its width.

    0 inside; +inf when either end is non-finite (NaN included), so a single comparison with the
    tolerance covers both failure modes while ``is_non_finite`` tells them apart.
    """
    if not (math.isfinite(q_max) and math.isfinite(q_min)):
        return math.inf
    low, high = interval
    width = max(high - low, MIN_INTERVAL_WIDTH)
    return max(q_max - high, low - q_min, 0.0) / width


@dataclass(frozen=True)
class GuardState:
    """Consecutive offending reports so far, and why the last one offended."""

    strikes: int = 0
    last_reason: StopReason | None = None


def guard_step(
    state: GuardState, excess: float, cfg: GuardConfig
) -> tuple[GuardState, StopReason | None]:
    """Advance the guard by one report; return the new state and a stop reason once certain.

    ``excess`` is ``actor_q_excess`` of this report, or NaN when the guard has nothing to judge
    yet (no actor update so far): such a report neither offends nor clears the count.
    """
    if math.isnan(excess):
        return state, None
    if math.isinf(excess):
        reason: StopReason | None = "non_finite"
    elif excess > cfg.tolerance:
        reason = "q_explosion"
    else:
        return GuardState(), None
    state = GuardState(strikes=state.strikes + 1, last_reason=reason)
    stop = reason if cfg.enabled and state.strikes >= cfg.patience else None
    return state, stop
