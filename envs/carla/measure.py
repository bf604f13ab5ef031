"""From one tick's readings to the shared task's `DrivingStep`: pure, so it is tested without a server.

The env reads a `Tick` from the server (poses already in the project frame, see convert.py)
and hands it here with what the previous step measured; this module does the rest:

    progress     = s_now - s_prev          (arc length of the car's projection on the route)
    waypoints    = segment_now - segment_prev
    accel        = (speed - speed_prev) / dt
    target speed = min(configured, the road's limit)   (the limit where the map has one)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.carla.convert import Pose, is_off_road
from envs.carla.route import arc_lengths, gap_ahead, lane_errors, project_on_route
from envs.driving import DrivingStep

ROUTE_END_TOLERANCE_M = 2.0  # the route counts as completed this close to its last point


@dataclass(frozen=True)
class Route:
    """Route waypoints (n, 2) in the project frame and the arc length at each."""

    points: np.ndarray
    s: np.ndarray

    @classmethod
    def through(cls, points: np.ndarray) -> Route:
        return cls(points, arc_lengths(points))

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def completed(self, s: float) -> bool:
        return s >= self.length - ROUTE_END_TOLERANCE_M


@dataclass(frozen=True)
class Tick:
    """What the server reported for one tick, in the project frame and SI units."""

    ego: Pose
    ego_half_length: float  # m, half the car's length
    speed: float  # m/s
    speed_limit: float  # m/s on this road, 0 where the map has none
    lane: Pose  # centre of the nearest driving lane, facing along it
    lane_width: float
    on_driving_lane: bool
    crossed_markings: tuple[str, ...]  # lane markings crossed since the last tick
    collided: bool  # a collision since the last tick
    others_xy: np.ndarray  # (m, 2) positions of the other vehicles
    others_half_length: np.ndarray  # (m,)


@dataclass(frozen=True)
class Previous:
    """What the step before measured (all zero before an episode's first measurement)."""

    speed: float = 0.0
    accel: float = 0.0
    steer: float = 0.0
    s: float = 0.0
    segment: int = 0


def driving_step(tick: Tick, steer: float, previous: Previous, route: Route, target_speed: float,
                 dt: float) -> tuple[DrivingStep, Previous]:
    """The DrivingStep of `tick` (formulas in the module docstring), and what the next step needs of it."""
    s, segment = project_on_route(route.points, route.s, tick.ego.xy, previous.segment)
    lateral_offset, heading_error = lane_errors(tick.ego, tick.lane)
    accel = (tick.speed - previous.speed) / dt
    step = DrivingStep(
        speed=tick.speed,
        target_speed=min(target_speed, tick.speed_limit) if tick.speed_limit > 0 else target_speed,
        lateral_offset=lateral_offset,
        heading_error=heading_error,
        lane_half_width=tick.lane_width / 2,
        accel=accel,
        prev_accel=previous.accel,
        steer=steer,
        prev_steer=previous.steer,
        dt=dt,
        collided=tick.collided,
        off_road=is_off_road(tick.on_driving_lane, tick.crossed_markings),
        gap_ahead=gap_ahead(tick.ego, tick.ego_half_length, tick.others_xy, tick.others_half_length,
                            tick.lane_width / 2),
        progress=s - previous.s,
        waypoints_reached=max(segment - previous.segment, 0),
    )
    return step, Previous(speed=tick.speed, accel=accel, steer=steer, s=s, segment=segment)
