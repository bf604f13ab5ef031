"""Between CARLA's types and conventions and the project's: pure functions, no server needed.

CARLA (Unreal Engine) is left-handed: x forward, y to the right, z up, and yaw in degrees
grows clockwise seen from above. envs.driving is right-handed (y to the left, yaw in radians
counter-clockwise), so every pose crosses this module once:

    x_rh = x,   y_rh = -y,   yaw_rh = -radians(yaw)

which keeps "left of the lane is a positive offset" true for both backends.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import carla
import numpy as np

from envs.carla.config import CarlaConfig
from envs.driving import action_to_controls

# Crossing these markings means the car has left the road, not just its lane.
ROAD_EDGE_MARKINGS = frozenset({"Grass", "Curb"})


@dataclass(frozen=True)
class Pose:
    """A planar pose in the right-handed project frame: metres and radians (CCW)."""

    x: float
    y: float
    yaw: float

    @property
    def xy(self) -> tuple[float, float]:
        return self.x, self.y


def pose_from_transform(transform: carla.Transform) -> Pose:
    """The project-frame pose of a CARLA transform (see the module docstring)."""
    return Pose(transform.location.x, -transform.location.y, -math.radians(transform.rotation.yaw))


def xy_from_location(location: carla.Location) -> tuple[float, float]:
    """The project-frame position of a CARLA location."""
    return location.x, -location.y


def vehicle_control(action: np.ndarray) -> carla.VehicleControl:
    """The CARLA control for an action in envs.driving.ACTION_SPACE (steer, throttle/brake)."""
    steer, throttle, brake = action_to_controls(action)
    return carla.VehicleControl(throttle=throttle, steer=steer, brake=brake)


def synchronous_settings(cfg: CarlaConfig) -> carla.WorldSettings:
    """World settings of a training run: the server waits for our tick, each tick is one fixed step.

    Rendering is switched off for vector-only observations: no camera needs it, and it is
    most of a server's GPU time.
    """
    settings = carla.WorldSettings()
    settings.synchronous_mode = True
    settings.fixed_delta_seconds = cfg.fixed_delta_seconds
    settings.no_rendering_mode = cfg.observation == "vector"
    return settings


def asynchronous_settings() -> carla.WorldSettings:
    """The server's own defaults, restored on close so a server is not left waiting for ticks."""
    return carla.WorldSettings()


def image_to_chw(raw_data: bytes, height: int, width: int) -> np.ndarray:
    """CARLA camera bytes (BGRA rows) as an RGB uint8 array (3, H, W)."""
    bgra = np.frombuffer(raw_data, dtype=np.uint8)
    if bgra.size != height * width * 4:
        raise ValueError(f"camera image has {bgra.size} bytes, expected {height}x{width}x4 = {height * width * 4}")
    return np.ascontiguousarray(bgra.reshape(height, width, 4)[:, :, 2::-1].transpose(2, 0, 1))


def is_off_road(on_driving_lane: bool, crossed_markings: Iterable[str]) -> bool:
    """Off the road: no driving lane under the car, or it crossed a grass or curb edge this step."""
    return not on_driving_lane or any(marking in ROAD_EDGE_MARKINGS for marking in crossed_markings)
