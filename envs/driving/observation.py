"""Observation and action layout shared by every driving backend.

Observation: `Dict(image=uint8 [C, H, W], vector=float32 [VECTOR_SIZE])`, or the vector alone
for vector-only studies. The vector, each entry scaled to about O(1) so no network needs input
normalisation:

    [ speed / SPEED_SCALE,
      lateral_offset / LATERAL_SCALE,
      heading_error (rad),
      min(gap_ahead, GAP_SCALE) / GAP_SCALE,            (1.0: nothing ahead within GAP_SCALE)
      x_1 / WAYPOINT_SCALE, y_1 / WAYPOINT_SCALE, ...,   (next waypoints, ego frame, x forward,
      x_n / WAYPOINT_SCALE, y_n / WAYPOINT_SCALE ]        y to the left)

clipped to [-VECTOR_BOUND, VECTOR_BOUND] so it always lies in its space. The gap to the car
ahead is the one entry beyond speed, offset, heading and waypoints: without it a vector-only
agent is blind to traffic and cannot learn to avoid rear-ending a slower car.

Action: `Box([-1, -1], [1, 1])` = (steer, throttle if > 0 else brake), mapped to CARLA's
control ranges by `action_to_controls`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

N_WAYPOINTS = 5
SPEED_SCALE = 10.0  # m/s
LATERAL_SCALE = 2.0  # m, about half a lane
GAP_SCALE = 50.0  # m, farther than this counts as free road
WAYPOINT_SCALE = 20.0  # m
VECTOR_BOUND = 10.0
N_SCALARS = 4  # speed, lateral offset, heading error, gap ahead


def vector_size(n_waypoints: int = N_WAYPOINTS) -> int:
    """Length of the vector observation for `n_waypoints` waypoints."""
    return N_SCALARS + 2 * n_waypoints


def driving_observation_space(
    image_shape: tuple[int, int, int] | None, n_waypoints: int = N_WAYPOINTS
) -> spaces.Space[Any]:
    """Dict(image, vector) for an image shape (C, H, W), or the vector Box alone for None."""
    if n_waypoints < 1:
        raise ValueError(f"n_waypoints must be >= 1, got {n_waypoints}")
    vector = spaces.Box(-VECTOR_BOUND, VECTOR_BOUND, shape=(vector_size(n_waypoints),), dtype=np.float32)
    if image_shape is None:
        return vector
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {image_shape}")
    image = spaces.Box(0, 255, shape=tuple(image_shape), dtype=np.uint8)
    return spaces.Dict({"image": image, "vector": vector})


def vector_observation(
    speed: float,
    lateral_offset: float,
    heading_error: float,
    waypoints_ego: np.ndarray,
    gap_ahead: float = math.inf,
) -> np.ndarray:
    """The float32 vector observation (layout in the module docstring).

    `waypoints_ego` is (n, 2) in metres in the ego frame (see `to_ego_frame`); `gap_ahead` is
    the distance in metres to the nearest car ahead in the lane, inf when there is none.
    """
    waypoints = np.asarray(waypoints_ego, dtype=np.float32)
    if waypoints.ndim != 2 or waypoints.shape[1] != 2:
        raise ValueError(f"waypoints_ego must have shape (n, 2), got {waypoints.shape}")
    vector = np.empty(N_SCALARS + waypoints.size, dtype=np.float32)
    vector[0] = speed / SPEED_SCALE
    vector[1] = lateral_offset / LATERAL_SCALE
    vector[2] = heading_error
    vector[3] = min(gap_ahead, GAP_SCALE) / GAP_SCALE
    vector[N_SCALARS:] = waypoints.reshape(-1) / WAYPOINT_SCALE
    return np.clip(vector, -VECTOR_BOUND, VECTOR_BOUND, out=vector)


def wrap_angle(angle: float) -> float:
    """Angle wrapped into [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


def to_ego_frame(points_xy: np.ndarray, ego_xy: np.ndarray | tuple[float, float], ego_yaw: float) -> np.ndarray:
    """World points (n, 2) in the ego frame: x forward along `ego_yaw`, y to the left.

        [x_e, y_e] = R(-yaw) @ ([x, y] - ego_xy),   R(-yaw) = [[cos, sin], [-sin, cos]]
    """
    delta = np.asarray(points_xy, dtype=np.float64) - np.asarray(ego_xy, dtype=np.float64)
    c, s = math.cos(ego_yaw), math.sin(ego_yaw)
    return np.stack([c * delta[:, 0] + s * delta[:, 1], -s * delta[:, 0] + c * delta[:, 1]], axis=1)


ACTION_SPACE = spaces.Box(
    low=np.array([-1.0, -1.0], dtype=np.float32), high=np.array([1.0, 1.0], dtype=np.float32), dtype=np.float32
)


def action_to_controls(action: np.ndarray) -> tuple[float, float, float]:
    """(steer in [-1, 1], throttle in [0, 1], brake in [0, 1]) from an action in ACTION_SPACE.

    The second action entry is one pedal axis: positive presses the throttle, negative the
    brake, so the two pedals are never pressed together. Out-of-range values are clipped.
    """
    steer = min(max(float(action[0]), -1.0), 1.0)
    pedal = min(max(float(action[1]), -1.0), 1.0)
    return steer, max(pedal, 0.0), max(-pedal, 0.0)
