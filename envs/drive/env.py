"""`DriveEnv`: the embedded driving simulator behind gymnasium id `Drive-v0`.

The same task as the CARLA env, without a server or a GPU: the ego (a kinematic bicycle, see
vehicle.py) drives a closed multi-lane road with bends (road.py) among NPCs that keep their
lanes and follow with IDM (traffic.py). Reward, termination, observation and action come from
envs.driving, exactly as in the CARLA env, so a study can move between the two.

One step, top to bottom:
    1. NPCs: leader gaps -> IDM accelerations -> speeds -> positions.
    2. Ego: action -> (steer, throttle, brake) -> bicycle step in road coordinates.
    3. Measure: collision, off road, gap ahead, progress, waypoints passed.
    4. Reward terms (info["reward_terms"]), termination reason, time-limit truncation.
    5. Observation: vector (+ bird's-eye raster in image mode).

Everything random is drawn in reset() from the env's seeded generator, so an episode is a pure
function of its seed and the actions.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import gymnasium
import numpy as np
from envs import EnvSettingsError, parse_settings
from envs.driving.observation import (
    ACTION_SPACE,
    action_to_controls,
    driving_observation_space,
    to_ego_frame,
    vector_observation,
)
from envs.driving.reward import REWARD_RANGE, DrivingStep, reward_terms, total_reward
from envs.driving.termination import episode_end, next_stuck_steps, termination_reason
from envs.drive.config import DriveConfig
from envs.drive.raster import BirdsEye, to_rgb
from envs.drive.road import Road
from envs.drive.traffic import ego_lanes, idm_acceleration, npc_leaders, spawn_npcs
from envs.drive.vehicle import CAR_LENGTH, CAR_WIDTH, EgoState, bicycle_step

ObsType = np.ndarray | dict[str, np.ndarray]


class DriveEnv(gymnasium.Env[ObsType, np.ndarray]):
    """Embedded driving simulator; settings are DriveConfig fields passed as keyword arguments."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None, **settings: Any):
        self.config = cfg = parse_settings(DriveConfig, settings, "Drive-v0")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise EnvSettingsError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.road = Road(cfg.road_length, cfg.n_bends, cfg.bend_amplitude, cfg.n_lanes, cfg.lane_width)
        self.birds_eye = BirdsEye(self.road, cfg.image_size, cfg.metres_per_pixel)
        image_shape = self.birds_eye.shape if cfg.observation == "image" else None
        self.observation_space = driving_observation_space(image_shape, cfg.n_waypoints)
        self.action_space = copy.deepcopy(ACTION_SPACE)  # own copy: seeding it must not touch other envs
        self.reward_range = REWARD_RANGE  # gymnasium 1.x dropped the attribute; the Q guard reads it
        self._lookahead = cfg.waypoint_spacing * np.arange(1, cfg.n_waypoints + 1)
        self._first_reset = True

    # ---------------------------------------------------------------- episode
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[ObsType, dict[str, Any]]:
        if seed is None and self._first_reset:
            seed = self.config.seed
        self._first_reset = False
        super().reset(seed=seed)
        cfg, road, rng = self.config, self.road, self.np_random

        start_lane = int(rng.integers(cfg.n_lanes))
        self.ego = EgoState(
            s=float(rng.uniform(0.0, road.length)), d=float(road.lane_centres[start_lane]), psi=0.0, v=cfg.initial_speed
        )
        self.npc_s, self.npc_lane = spawn_npcs(rng, cfg.n_npcs, road.length, cfg.n_lanes, self.ego.s)
        self.npc_d = road.lane_centres[self.npc_lane]
        self.npc_v0 = rng.uniform(*cfg.npc_speed_range, size=cfg.n_npcs) * cfg.target_speed
        self.npc_v = self.npc_v0.copy()
        self._same_lane = self.npc_lane[:, None] == self.npc_lane[None, :]
        np.fill_diagonal(self._same_lane, False)

        self.steps = 0
        self.stuck_steps = 0
        self.distance = 0.0  # m driven along the route this episode
        self.waypoints_passed = 0
        self.prev_accel = 0.0
        self.prev_steer = 0.0
        self.gap_ahead = self._gap_ahead()
        return self._observe(), {"speed": self.ego.v, "distance": 0.0}

    def step(self, action: np.ndarray) -> tuple[ObsType, float, bool, bool, dict[str, Any]]:
        cfg, road = self.config, self.road
        self._step_npcs()

        steer, throttle, brake = action_to_controls(action)
        self.ego, accel, progress = bicycle_step(
            self.ego, steer, throttle, brake, road.curvature(self.ego.s), cfg.dt, road.length
        )
        self.distance += progress
        passed = int(max(self.distance, 0.0) // cfg.waypoint_spacing)
        waypoints_reached = max(passed - self.waypoints_passed, 0)
        self.waypoints_passed = max(passed, self.waypoints_passed)

        collided = self._collided()
        off_road = abs(self.ego.d) > road.half_width
        self.gap_ahead = self._gap_ahead()
        self.stuck_steps = next_stuck_steps(self.stuck_steps, self.ego.v, cfg.termination)
        lane = road.lane_index(self.ego.d)
        terms = reward_terms(
            DrivingStep(
                speed=self.ego.v,
                target_speed=cfg.target_speed,
                lateral_offset=self.ego.d - float(road.lane_centres[lane]),
                heading_error=self.ego.psi,
                lane_half_width=cfg.lane_width / 2,
                accel=accel,
                prev_accel=self.prev_accel,
                steer=steer,
                prev_steer=self.prev_steer,
                dt=cfg.dt,
                collided=collided,
                off_road=off_road,
                gap_ahead=self.gap_ahead,
                progress=progress,
                waypoints_reached=waypoints_reached,
            ),
            cfg.reward,
        )
        self.prev_accel, self.prev_steer = accel, steer
        self.steps += 1

        reason = termination_reason(
            collided, off_road, self.distance >= cfg.route_length, self.stuck_steps, cfg.termination
        )
        terminated, truncated, why = episode_end(reason, self.steps, cfg.max_episode_steps)
        info: dict[str, Any] = {"reward_terms": terms, "speed": self.ego.v, "distance": self.distance, "lane": lane, **why}
        return self._observe(), total_reward(terms), terminated, truncated, info

    # ---------------------------------------------------------------- physics
    def _step_npcs(self) -> None:
        """IDM for every NPC at once; the ego leads the NPCs in the lanes it overlaps."""
        road, dt = self.road, self.config.dt
        in_ego_lane = ego_lanes(self.ego.d, road.lane_centres, road.lane_width)[self.npc_lane]
        ahead = np.append(self.npc_s, self.ego.s)[None, :] - self.npc_s[:, None]
        gap, leader = npc_leaders(ahead, self._same_lane, in_ego_lane, road.length)
        closing_speed = self.npc_v - np.append(self.npc_v, self.ego.v)[leader]
        accel = idm_acceleration(self.npc_v, self.npc_v0, gap, closing_speed)
        self.npc_v = np.maximum(self.npc_v + accel * dt, 0.0)
        self.npc_s = (self.npc_s + self.npc_v * dt) % road.length

    def _collided(self) -> bool:
        """Ego footprint (rotated by its heading error) overlaps an NPC's, tested along s and d."""
        cos_psi, sin_psi = abs(math.cos(self.ego.psi)), abs(math.sin(self.ego.psi))
        reach_s = (CAR_LENGTH * cos_psi + CAR_WIDTH * sin_psi + CAR_LENGTH) / 2
        reach_d = (CAR_LENGTH * sin_psi + CAR_WIDTH * cos_psi + CAR_WIDTH) / 2
        near_s = np.abs(self.road.signed_gap(self.npc_s, self.ego.s)) < reach_s
        return bool(np.any(near_s & (np.abs(self.npc_d - self.ego.d) < reach_d)))

    def _gap_ahead(self) -> float:
        """Bumper-to-bumper metres to the nearest NPC ahead in the ego's lane (inf if none)."""
        in_lane = self.npc_lane == self.road.lane_index(self.ego.d)
        if not in_lane.any():
            return math.inf
        ahead = (self.npc_s[in_lane] - self.ego.s) % self.road.length
        return max(float(ahead.min()) - CAR_LENGTH, 0.0)

    # ---------------------------------------------------------------- observation
    def _world(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World x, y, yaw of the NPCs, then the ego (index n_npcs), then the waypoints ahead.

        One lookup for all of them; waypoints lie on the centre of the ego's current lane.
        """
        road, ego = self.road, self.ego
        lane_centre = road.lane_centres[road.lane_index(ego.d)]
        s = np.concatenate([self.npc_s, [ego.s], ego.s + self._lookahead])
        d = np.concatenate([self.npc_d, [ego.d], np.full(len(self._lookahead), lane_centre)])
        x, y, yaw = road.to_world(s, d)
        yaw[self.config.n_npcs] += ego.psi
        return x, y, yaw

    def _draw(self, x: np.ndarray, y: np.ndarray, yaw: np.ndarray) -> np.ndarray:
        n = self.config.n_npcs
        return self.birds_eye.draw(float(x[n]), float(y[n]), float(yaw[n]), x[: n + 1], y[: n + 1], yaw[: n + 1])

    def _observe(self) -> ObsType:
        road, ego, n = self.road, self.ego, self.config.n_npcs
        x, y, yaw = self._world()
        waypoints = to_ego_frame(np.column_stack([x[n + 1 :], y[n + 1 :]]), (x[n], y[n]), float(yaw[n]))
        lateral_offset = ego.d - float(road.lane_centres[road.lane_index(ego.d)])
        vector = vector_observation(ego.v, lateral_offset, ego.psi, waypoints, self.gap_ahead)
        if self.config.observation == "vector":
            return vector
        self._image = self._draw(x, y, yaw)
        return {"image": self._image, "vector": vector}

    def render(self) -> np.ndarray | None:
        """RGB frame (H * render_scale, W * render_scale, 3) of the bird's-eye view, for render_mode='rgb_array'."""
        if self.render_mode is None:
            return None
        image = self._image if self.config.observation == "image" else self._draw(*self._world())
        return to_rgb(image, self.config.render_scale)
