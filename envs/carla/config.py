"""Settings of the CARLA env: where the server is, the scenario, and the shared driving task.

Users set them as `--set carla.host=... --set carla.port=...`; the project factory passes them
as `CarlaEnv(**settings)`. No `carla` import here, so a study file is validated on a machine
without the client.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from envs.driving import RewardConfig, TerminationConfig

# CARLA's physics substeps at most max_substeps x max_substep_delta_time = 10 x 0.01 s per
# frame (its defaults); a longer fixed step makes the physics inaccurate, so it is refused.
MAX_FIXED_DELTA_SECONDS = 0.1


class CarlaConfig(BaseModel):
    """One CARLA driving scenario on one server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="CARLA server address")
    port: int = Field(2000, ge=1, le=65535, description="the server's RPC port (streaming is port + 1)")
    tm_port: int = Field(8000, ge=1, le=65535, description="traffic manager port, one per server on a node")
    timeout_s: float = Field(10.0, gt=0, description="longest wait for any server call, a tick included")
    load_world_timeout_s: float = Field(120.0, gt=0, description="longest wait for loading the town")
    town: str = Field("Town03", description="map name, e.g. Town03 or /Game/Carla/Maps/Town03")
    n_npcs: int = Field(20, ge=0, description="vehicles driven by the traffic manager")
    observation: Literal["image", "vector"] = Field("image", description="image+vector, or the vector alone")
    camera_width: int = Field(84, ge=8, le=2048)
    camera_height: int = Field(84, ge=8, le=2048)
    camera_fov: float = Field(90.0, gt=0, lt=180)
    fixed_delta_seconds: float = Field(0.05, gt=0, le=MAX_FIXED_DELTA_SECONDS, description="simulated s per step")
    max_episode_steps: int = Field(1000, ge=1, description="truncation (a time limit, not a terminal state)")
    target_speed: float = Field(8.0, gt=0, description="m/s; capped by the road's speed limit")
    route_length_m: float = Field(500.0, gt=0, description="route length ahead of the spawn point")
    route_spacing_m: float = Field(5.0, gt=0, description="distance between route waypoints")
    ego_blueprint: str = Field("vehicle.tesla.model3")
    reward: RewardConfig = Field(default_factory=RewardConfig)
    termination: TerminationConfig = Field(default_factory=TerminationConfig)

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) of the image observation, None for vector-only observations."""
        return (3, self.camera_height, self.camera_width) if self.observation == "image" else None
