"""Why a driving episode ends, shared by every backend.

An episode *terminates* (no bootstrapping past it) on a collision, on leaving the road, on
completing the route, or when the car has been stuck for too long. Reaching the episode's step
limit is a *truncation* (the state still has a value), which the env reports separately:

    info["termination_reason"] = termination_reason(...)   when terminated
    info["truncation_reason"]  = TIME_LIMIT                 when truncated

Keeping the two apart matters for TD3: bootstrapping through a time limit is correct,
bootstrapping through a crash is not.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

TERMINATION_REASONS: tuple[str, ...] = ("collision", "off_road", "route_completed", "stuck")
TIME_LIMIT = "time_limit"


class TerminationConfig(BaseModel):
    """When a slow car counts as stuck: below `stuck_speed` for `stuck_steps` steps in a row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stuck_speed: float = Field(default=0.5, ge=0.0, description="m/s below which the car is not moving")
    stuck_steps: int = Field(default=50, ge=1, description="consecutive slow steps that end the episode")


def next_stuck_steps(stuck_steps: int, speed: float, cfg: TerminationConfig) -> int:
    """Count of consecutive slow steps after this one: +1 while slow, back to 0 once moving."""
    return stuck_steps + 1 if speed < cfg.stuck_speed else 0


def termination_reason(
    collided: bool,
    off_road: bool,
    route_done: bool,
    stuck_steps: int,
    cfg: TerminationConfig,
) -> str | None:
    """The reason the episode terminates this step, or None to go on.

    When several hold at once the most serious wins (collision, off road, route completed,
    stuck), so a crash on the last metre of the route is reported as a crash.
    """
    if collided:
        return "collision"
    if off_road:
        return "off_road"
    if route_done:
        return "route_completed"
    if stuck_steps >= cfg.stuck_steps:
        return "stuck"
    return None


def episode_end(reason: str | None, steps: int, max_steps: int) -> tuple[bool, bool, dict[str, str]]:
    """(terminated, truncated, the info entry saying why) after ``steps`` steps of at most ``max_steps``:
    a termination ``reason`` wins over the time limit."""
    if reason is not None:
        return True, False, {"termination_reason": reason}
    if steps >= max_steps:
        return False, True, {"truncation_reason": TIME_LIMIT}
    return False, False, {}
