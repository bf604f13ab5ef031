"""Per-step reward of the driving agent, shared by every backend (CARLA, the embedded sim).

A backend measures one `DrivingStep` (SI units) and calls `reward_terms`; the env returns
`total_reward(terms)` and puts `terms` in `info["reward_terms"]` so users can see which term
dominates. Five terms, each a plain formula:

    efficiency   = w_eff * max(1 - |v - v*| / v*, -1)                  in [-w_eff, w_eff]
    lane_keeping = -(w_lat * min(|offset| / half_width, 1)
                     + w_head * min(|heading_error| / (pi/2), 1))      in [-(w_lat + w_head), 0]
    comfort      = -min(w_jerk * |a - a_prev| / dt
                        + w_steer_rate * |steer - steer_prev| / dt, comfort_cap)
    safety       = -min(collision_penalty * collided + off_road_penalty * off_road
                        + near_miss_penalty * near_miss, -REWARD_RANGE[0])
    progress     = w_prog * metres_along_route + waypoint_bonus * waypoints_reached

with near_miss = clip(1 - gap_ahead / (near_miss_gap + near_miss_headway * v), 0, 1).

Lane keeping is a penalty only (never positive): a positive in-lane bonus would pay an agent
for standing still in its lane. Efficiency is 0 at standstill and maximal at the target speed,
so driving forward is what earns reward. The total is clipped to REWARD_RANGE, the range the
actor-path Q guard is built from, so the declared range is a guarantee and not a hope.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

REWARD_RANGE: tuple[float, float] = (-50.0, 200.0)
"""Declared per-step range [r_min, r_max]; the Q guard derives the value interval from it."""

TERM_NAMES: tuple[str, ...] = ("efficiency", "lane_keeping", "comfort", "safety", "progress")


class RewardConfig(BaseModel):
    """Weights and thresholds of the reward terms (see the module docstring for the formulas).

    The target speed is not here: it is measured per step (`DrivingStep.target_speed`) because
    a backend may change it along the route (speed limits in CARLA towns).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    efficiency_weight: float = Field(default=2.0, ge=0.0, description="reward at exactly the target speed")
    lateral_weight: float = Field(default=1.0, ge=0.0, description="penalty at the lane edge (half a lane off centre)")
    heading_weight: float = Field(default=1.0, ge=0.0, description="penalty at 90 degrees heading error")
    jerk_weight: float = Field(default=0.005, ge=0.0, description="per m/s^3 of jerk")
    steer_rate_weight: float = Field(default=0.05, ge=0.0, description="per unit of steer command per s")
    comfort_cap: float = Field(default=5.0, ge=0.0, description="largest comfort penalty in one step")
    collision_penalty: float = Field(default=50.0, ge=0.0)
    off_road_penalty: float = Field(default=25.0, ge=0.0)
    near_miss_penalty: float = Field(default=5.0, ge=0.0, description="penalty at zero gap to the car ahead")
    near_miss_gap: float = Field(default=2.0, ge=0.0, description="m; standstill gap below which it is a near miss")
    near_miss_headway: float = Field(default=1.0, ge=0.0, description="s; time gap added per m/s of speed")
    progress_weight: float = Field(default=1.0, ge=0.0, description="per metre along the route")
    waypoint_bonus: float = Field(default=1.0, ge=0.0, description="per route waypoint passed")


@dataclass(frozen=True)
class DrivingStep:
    """What a backend measured during one step, in SI units.

    `steer` is the normalised steer command in [-1, 1] (the same in every backend), so the
    steering-rate penalty does not depend on a vehicle's maximum wheel angle.
    """

    speed: float  # m/s, >= 0
    target_speed: float  # m/s, > 0
    lateral_offset: float  # m from the centre of the current lane, left positive
    heading_error: float  # rad, vehicle yaw minus lane direction, wrapped to [-pi, pi]
    lane_half_width: float  # m, > 0
    accel: float  # m/s^2 along the vehicle this step
    prev_accel: float  # m/s^2 the step before
    steer: float  # steer command this step, [-1, 1]
    prev_steer: float  # steer command the step before
    dt: float  # s, > 0
    collided: bool
    off_road: bool
    gap_ahead: float  # m to the nearest car ahead in the lane (math.inf if none)
    progress: float  # metres along the route this step
    waypoints_reached: int  # route waypoints passed this step


def _check_step(step: DrivingStep) -> None:
    for name in ("target_speed", "lane_half_width", "dt"):
        value = getattr(step, name)
        if not value > 0.0:
            raise ValueError(f"DrivingStep.{name} must be > 0, got {value!r}")


def reward_terms(step: DrivingStep, cfg: RewardConfig) -> dict[str, float]:
    """The five reward terms of one step, keyed by TERM_NAMES (formulas in the module docstring)."""
    _check_step(step)
    speed_error = abs(step.speed - step.target_speed) / step.target_speed
    efficiency = cfg.efficiency_weight * max(1.0 - speed_error, -1.0)

    lane_penalty = cfg.lateral_weight * min(abs(step.lateral_offset) / step.lane_half_width, 1.0)
    lane_penalty += cfg.heading_weight * min(abs(step.heading_error) / (math.pi / 2), 1.0)

    jerk = abs(step.accel - step.prev_accel) / step.dt
    steer_rate = abs(step.steer - step.prev_steer) / step.dt
    comfort_penalty = min(cfg.jerk_weight * jerk + cfg.steer_rate_weight * steer_rate, cfg.comfort_cap)

    safe_gap = cfg.near_miss_gap + cfg.near_miss_headway * max(step.speed, 0.0)
    near_miss = 0.0 if safe_gap == 0.0 else min(max(1.0 - step.gap_ahead / safe_gap, 0.0), 1.0)
    hazard = (
        cfg.collision_penalty * step.collided
        + cfg.off_road_penalty * step.off_road
        + cfg.near_miss_penalty * near_miss
    )
    safety_penalty = min(hazard, -REWARD_RANGE[0])

    progress = cfg.progress_weight * step.progress + cfg.waypoint_bonus * step.waypoints_reached

    # Penalties are magnitudes >= 0; `0.0 - x` keeps a zero penalty from printing as -0.0.
    return {
        "efficiency": efficiency,
        "lane_keeping": 0.0 - lane_penalty,
        "comfort": 0.0 - comfort_penalty,
        "safety": 0.0 - safety_penalty,
        "progress": progress,
    }


def total_reward(terms: dict[str, float]) -> float:
    """Sum of the terms, clipped to REWARD_RANGE so the declared range always holds."""
    low, high = REWARD_RANGE
    return min(max(math.fsum(terms.values()), low), high)
