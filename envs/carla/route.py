"""Where the car is relative to its route, its lane and the traffic ahead: pure numpy maths.

Everything is in the right-handed project frame (envs.carla.convert turns CARLA poses into
it). A route is a polyline of waypoints `points` (n, 2) with arc length `s` at each point.
"""

from __future__ import annotations

import math

import numpy as np

from envs.carla.convert import Pose
from envs.driving import to_ego_frame, wrap_angle

# How far along the route the projection may look for the car from the last segment it was on:
# a route that passes near itself (a loop, a junction) must not make the car jump ahead.
SEARCH_SEGMENTS = 20



def arc_lengths(points: np.ndarray) -> np.ndarray:
    """Arc length at each route point, from 0 at the first."""
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def project_on_route(points: np.ndarray, s: np.ndarray, xy: tuple[float, float], segment: int) -> tuple[float, int]:
    """Arc length of the point on the route nearest to `xy`, and the segment it lies on.

    Only segments `segment .. segment + SEARCH_SEGMENTS` are searched (see SEARCH_SEGMENTS):
    for each segment a->b the nearest point is a + t (b - a), t = clip((p - a).(b - a) / |b - a|^2, 0, 1).
    """
    if len(points) < 2:
        raise ValueError(f"a route needs at least 2 points, got {len(points)}")
    segment = min(max(segment, 0), len(points) - 2)
    last = min(segment + SEARCH_SEGMENTS, len(points) - 1)
    a, b = points[segment:last], points[segment + 1 : last + 1]
    ab = b - a
    length2 = np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-12)
    t = np.clip(np.einsum("ij,ij->i", np.asarray(xy) - a, ab) / length2, 0.0, 1.0)
    nearest = a + t[:, None] * ab
    best = int(np.argmin(np.linalg.norm(nearest - np.asarray(xy), axis=1)))
    return float(s[segment + best] + t[best] * math.sqrt(length2[best])), segment + best


def upcoming_waypoints(points: np.ndarray, segment: int, n: int) -> np.ndarray:
    """The `n` route points after segment `segment`'s start, the last repeated past the route's end."""
    indices = np.minimum(np.arange(segment + 1, segment + 1 + n), len(points) - 1)
    return points[indices]


def lane_errors(ego: Pose, lane: Pose) -> tuple[float, float]:
    """(lateral offset, heading error) of the car from its lane's centre pose: left and CCW positive."""
    offset = float(to_ego_frame(np.array([ego.xy]), lane.xy, lane.yaw)[0, 1])
    return offset, wrap_angle(ego.yaw - lane.yaw)


def gap_ahead(ego: Pose, ego_half_length: float, others_xy: np.ndarray, others_half_length: np.ndarray,
              lane_half_width: float) -> float:
    """Bumper-to-bumper distance to the nearest car ahead within the ego's lane width (inf if none)."""
    if len(others_xy) == 0:
        return math.inf
    local = to_ego_frame(others_xy, ego.xy, ego.yaw)
    gaps = local[:, 0] - ego_half_length - others_half_length
    ahead = (local[:, 0] > 0.0) & (np.abs(local[:, 1]) < lane_half_width)
    return float(max(gaps[ahead].min(), 0.0)) if ahead.any() else math.inf
