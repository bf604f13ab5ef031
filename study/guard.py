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

# The narrowest reward range the guard bounds Q with, in reward units. While every reward seen is
# the same (all zeros before a sparse reward arrives) the interval would be a single point and
# critic noise would read as an explosion; widened to one reward unit the interval is
# 1 / (1 - gamma) wide (100 at gamma 0.99), so tolerance 0.1 means 10 rewards' worth of return.
MIN_REWARD_SPAN = 1.0


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


def guard_reward_range(
    declared: tuple[float, float] | None, seen: tuple[float, float] | None
) -> tuple[float, float] | None:
    """The reward range the guard bounds Q with: the declared range intersected with the rewards seen.

    Both are valid bounds: no reward can leave the declared range, and a Bellman backup on the
    buffer's data cannot leave the interval of the rewards it holds, so a Q outside it is
    extrapolation. While the env keeps its declaration the intersection is the seen range; a
    seen reward outside the declared range proves the declaration wrong, and only the seen range
    is used. A range narrower than ``MIN_REWARD_SPAN`` is widened about its centre to that span,
    within a declared range the rewards keep. None until any reward is seen (nothing to judge).
    """
    if seen is None:
        return None
    low, high = seen
    kept = declared is not None and declared[0] <= low and high <= declared[1]
    bound_low, bound_high = declared if kept and declared is not None else (-math.inf, math.inf)
    missing = MIN_REWARD_SPAN - (high - low)
    if missing > 0:
        low, high = max(low - missing / 2, bound_low), min(high + missing / 2, bound_high)
    return low, high


def q_interval(
    declared: tuple[float, float] | None,
    seen: tuple[float, float] | None,
    gamma: float,
    reward_clip: float | None,
) -> tuple[float, float] | None:
    """The guard's interval: every return of rewards in ``guard_reward_range`` (clipped, when
    clipping is on, as the critic sees them). None until any reward is seen."""
    reward_range = guard_reward_range(declared, seen)
    if reward_range is None:
        return None
    r_min, r_max = clip_reward_range(*reward_range, reward_clip)
    return return_interval(r_min, r_max, gamma)


def actor_q_excess(q_max: float, q_min: float, interval: tuple[float, float]) -> float:
    """How far the batch's actor-path Q lies outside the interval, as a share of its width.

    0 inside; +inf when either end is non-finite (NaN included), so a single comparison with the
    tolerance covers both failure modes while ``offence`` tells them apart. A zero-width interval
    (only gamma 0 with rewards clipped to one value) is measured against one reward unit.
    """
    if not (math.isfinite(q_max) and math.isfinite(q_min)):
        return math.inf
    low, high = interval
    width = high - low if high > low else MIN_REWARD_SPAN
    return max(q_max - high, low - q_min, 0.0) / width


def offence(excess: float, cfg: GuardConfig) -> StopReason | None:
    """Why one report offends: ``non_finite`` (+inf), ``q_explosion`` (beyond the tolerance), or
    None. NaN, a report with no actor step yet, has nothing to judge and never offends."""
    if math.isinf(excess):
        return "non_finite"
    return "q_explosion" if excess > cfg.tolerance else None


def verdict(strikes: int, excess: float, cfg: GuardConfig) -> StopReason | None:
    """The stop a report calls for, given its excess and the consecutive strikes counted with it.

    The trial counts the strikes and checkpoints them (``guard_step``), so a retried or resumed
    trial carries its own count and the Ray scheduler only applies this rule to each report.
    """
    if not cfg.enabled or strikes < cfg.patience:
        return None
    return offence(excess, cfg)


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
    yet (no actor step so far): such a report neither offends nor clears the count.
    """
    if math.isnan(excess):
        return state, None
    reason = offence(excess, cfg)
    if reason is None:
        return GuardState(), None
    state = GuardState(strikes=state.strikes + 1, last_reason=reason)
    return state, verdict(state.strikes, excess, cfg)
