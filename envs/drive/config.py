"""Settings of the embedded driving simulator (`Drive-v0`), validated before anything is built."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from envs.driving.observation import N_WAYPOINTS
from envs.driving.reward import RewardConfig
from envs.driving.termination import TerminationConfig
from envs.drive.road import max_curvature
from envs.drive.traffic import npc_capacity

MAX_CURVATURE_TIMES_HALF_WIDTH = 0.5  # keeps 1 - kappa d (road coordinates) away from 0


class DriveConfig(BaseModel):
    """Scenario, road, observation and episode settings; `DriveEnv(**fields)` takes them as kwargs.

    Defaults follow the CARLA scenario the project serves: 20 NPCs, image observations.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_npcs: int = Field(default=20, ge=0, description="NPC cars driving with IDM")
    observation: Literal["image", "vector"] = Field(
        default="image", description="'image': Dict(image, vector) as CARLA; 'vector': the vector alone, faster"
    )
    image_size: int = Field(default=64, ge=16, le=256, description="H = W of the bird's-eye image, pixels")
    metres_per_pixel: float = Field(default=0.75, gt=0.0, le=2.0)
    n_lanes: int = Field(default=3, ge=1, le=6)
    lane_width: float = Field(default=3.5, ge=2.5, le=5.0, description="m")
    road_length: float = Field(default=1000.0, ge=200.0, le=20000.0, description="m around the loop")
    n_bends: int = Field(default=5, ge=2, le=50, description="S-bends around the loop (>= 2 closes it)")
    bend_amplitude: float = Field(default=0.25, ge=0.0, le=2.0, description="rad of heading swing in a bend")
    dt: float = Field(default=0.1, gt=0.0, le=0.5, description="s per step")
    max_episode_steps: int = Field(default=1000, ge=1, description="steps before truncation")
    target_speed: float = Field(default=10.0, gt=0.0, le=30.0, description="m/s the efficiency term rewards")
    initial_speed: float = Field(default=5.0, ge=0.0, le=30.0, description="m/s of the ego at reset")
    npc_speed_range: tuple[float, float] = Field(
        default=(0.5, 1.0), description="NPC desired speeds, drawn uniformly, as fractions of target_speed"
    )
    route_length: float = Field(default=500.0, gt=0.0, description="m to drive for 'route_completed'")
    waypoint_spacing: float = Field(default=5.0, gt=0.0, description="m between route waypoints")
    n_waypoints: int = Field(default=N_WAYPOINTS, ge=1, le=20, description="waypoints in the observation")
    seed: int | None = Field(default=None, description="seed of the first reset() when it is given none")
    render_scale: int = Field(default=4, ge=1, le=16, description="render() upscaling of the raster")
    reward: RewardConfig = Field(default_factory=RewardConfig)
    termination: TerminationConfig = Field(default_factory=TerminationConfig)

    @model_validator(mode="after")
    def _check_scenario(self) -> DriveConfig:
        low, high = self.npc_speed_range
        if not 0.0 < low <= high:
            raise ValueError(f"npc_speed_range must be (low, high) with 0 < low <= high, got {self.npc_speed_range}")
        capacity = npc_capacity(self.road_length, self.n_lanes)
        if self.n_npcs > capacity:
            raise ValueError(
                f"n_npcs={self.n_npcs} does not fit: a {self.road_length:g} m road with {self.n_lanes} lanes "
                f"holds at most {capacity}; lower n_npcs or raise road_length / n_lanes"
            )
        kappa = max_curvature(self.road_length, self.n_bends, self.bend_amplitude)
        if kappa * self.n_lanes * self.lane_width / 2 > MAX_CURVATURE_TIMES_HALF_WIDTH:
            raise ValueError(
                f"bend_amplitude={self.bend_amplitude:g} with n_bends={self.n_bends} on a {self.road_length:g} m "
                f"road bends tighter than the road is wide (min radius {1 / kappa:.1f} m); "
                "lower bend_amplitude or n_bends, or raise road_length"
            )
        return self
