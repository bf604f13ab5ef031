"""The CARLA driving env: the shared driving task (envs.driving) on a real CARLA server.

One step, top to bottom:

    action -> carla.VehicleControl -> world.tick()          (synchronous mode: one fixed step)
    -> Tick: camera frame, ego pose and speed, lane, other cars, collision and
       lane-invasion events since the last step                 (project frame, convert.py)
    -> DrivingStep: route progress, lane errors, gap ahead      (measure.py, pure)
    -> reward terms, total, termination                         (envs.driving)

The server runs in synchronous mode with a fixed time step, so a step is the same simulated
time however slow the server is, and the traffic manager (on its own port, `tm_port`, so
servers on one node do not share one) drives `n_npcs` vehicles in lockstep with it. Every
actor the env spawns is destroyed on reset and on close.

Failures of the server (a call or tick that times out, a lost connection) raise
`CarlaConnectionError` naming the address; the env then drops its client, and the next
`reset()` connects afresh, so a trial survives its server being restarted by the pool. (An
old client never reconnects, so the first reset after a restart spends `timeout_s` finding
out that its actors went with the old server.)
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import queue
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, SupportsFloat

import carla
import gymnasium as gym
import numpy as np

from envs import EnvSettingsError, parse_settings
from envs.carla.client import CarlaConnectionError, connect, is_connection_failure
from envs.carla.config import CarlaConfig
from envs.carla.convert import (
    Pose,
    asynchronous_settings,
    image_to_chw,
    pose_from_transform,
    synchronous_settings,
    vehicle_control,
    xy_from_location,
)
from envs.carla.measure import Previous, Route, Tick, driving_step
from envs.carla.route import upcoming_waypoints
from envs.driving import (
    ACTION_SPACE,
    N_WAYPOINTS,
    REWARD_RANGE,
    DrivingStep,
    driving_observation_space,
    episode_end,
    next_stuck_steps,
    reward_terms,
    termination_reason,
    to_ego_frame,
    total_reward,
    vector_observation,
)

log = logging.getLogger(__name__)

CAMERA_MOUNT = carla.Transform(carla.Location(x=1.5, z=2.4))  # above the windscreen, looking ahead
SETTLE_TICKS = 2  # ticks after spawning, so the car rests on the road and the camera has a frame
SPAWN_ATTEMPTS = 10

Observation = dict[str, np.ndarray] | np.ndarray


@dataclass
class _Episode:
    """What one episode spawned and what it measured last step."""

    ego: carla.Vehicle
    ego_half_length: float
    sensors: list[carla.Sensor]
    npc_ids: list[int]
    npc_half_lengths: np.ndarray
    route: Route
    images: queue.SimpleQueue[carla.Image] = field(default_factory=queue.SimpleQueue)
    collisions: queue.SimpleQueue[carla.CollisionEvent] = field(default_factory=queue.SimpleQueue)
    invasions: queue.SimpleQueue[carla.LaneInvasionEvent] = field(default_factory=queue.SimpleQueue)
    previous: Previous = Previous()
    stuck_steps: int = 0
    steps: int = 0
    pose: Pose = Pose(0.0, 0.0, 0.0)
    last: DrivingStep | None = None  # the last measurement, for the observation
    frame: np.ndarray | None = None  # last camera frame, (3, H, W)


class CarlaEnv(gym.Env[Observation, np.ndarray]):
    """Drive a route in CARLA among traffic-manager NPCs (module docstring); settings: CarlaConfig."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, render_mode: str | None = None, **settings: Any) -> None:
        self.cfg = parse_settings(CarlaConfig, settings, "carla")
        if render_mode not in (None, "rgb_array"):
            raise EnvSettingsError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.cfg.fixed_delta_seconds)}
        self.observation_space = driving_observation_space(self.cfg.image_shape)
        self.action_space = copy.deepcopy(ACTION_SPACE)  # own copy: seeding it must not touch other envs
        self.reward_range = REWARD_RANGE  # gymnasium 1.x dropped it; the Q guard reads it
        self._client: carla.Client | None = None
        self._world: carla.World | None = None
        self._map: carla.Map | None = None
        self._episode: _Episode | None = None
        with self._server_calls():
            self._connect()

    @property
    def address(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    @property
    def _wants_camera(self) -> bool:
        return self.cfg.observation == "image" or self.render_mode == "rgb_array"

    # ----------------------------------------------------------------------------------------
    # gymnasium API
    # ----------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Observation, dict[str, Any]]:
        super().reset(seed=seed)
        self._destroy_actors()
        with self._server_calls():
            if self._client is None:
                self._connect()
            episode = self._start_episode()
        self._episode = episode
        return self._observe(episode), {"route_length_m": episode.route.length}

    def step(self, action: np.ndarray) -> tuple[Observation, SupportsFloat, bool, bool, dict[str, Any]]:
        episode = self._require_episode()
        with self._server_calls():
            world = self._require_world()
            control = vehicle_control(action)
            episode.ego.apply_control(control)
            frame = world.tick(self.cfg.timeout_s)
            tick = self._read_tick(episode, world, frame)
        step = self._measure(episode, tick, steer=float(control.steer))  # clipped, as the car steers
        terms = reward_terms(step, self.cfg.reward)
        episode.stuck_steps = next_stuck_steps(episode.stuck_steps, step.speed, self.cfg.termination)
        episode.steps += 1
        route_done = episode.route.completed(episode.previous.s)
        reason = termination_reason(step.collided, step.off_road, route_done, episode.stuck_steps,
                                     self.cfg.termination)
        terminated, truncated, why = episode_end(reason, episode.steps, self.cfg.max_episode_steps)
        info: dict[str, Any] = {"reward_terms": terms, "speed": step.speed, "lane_invasions": tick.crossed_markings,
                                "route_progress": episode.previous.s / episode.route.length, **why}
        return self._observe(episode), total_reward(terms), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """The last camera frame as RGB (H, W, 3), when render_mode is 'rgb_array'."""
        if self.render_mode != "rgb_array" or self._episode is None or self._episode.frame is None:
            return None
        return np.ascontiguousarray(self._episode.frame.transpose(1, 2, 0))

    def close(self) -> None:
        """Destroy our actors and hand the server back in asynchronous mode; a dead server is not an error."""
        self._destroy_actors()
        if self._client is not None and self._world is not None:
            try:
                with self._server_calls():
                    self._client.get_trafficmanager(self.cfg.tm_port).set_synchronous_mode(False)
                    self._world.apply_settings(asynchronous_settings())
            except CarlaConnectionError as err:
                log.warning("closing the CARLA env without restoring the server's settings: %s", err)
        self._client = self._world = self._map = None

    # ----------------------------------------------------------------------------------------
    # Server I/O
    # ----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _server_calls(self) -> Iterator[None]:
        """Turn the client's connection failures into CarlaConnectionError and forget the dead client."""
        try:
            yield
        except CarlaConnectionError:
            self._forget_server()
            raise
        except RuntimeError as err:
            if not is_connection_failure(err):
                raise
            self._forget_server()
            raise CarlaConnectionError(self.cfg.host, self.cfg.port, self.cfg.timeout_s, str(err)) from err

    def _forget_server(self) -> None:
        self._client = self._world = self._map = None
        self._episode = None  # its actors went with the server or are unreachable

    def _connect(self) -> None:
        """A fresh client; the town loaded if another is; synchronous mode; the traffic manager in lockstep."""
        client = connect(self.cfg.host, self.cfg.port, self.cfg.timeout_s)
        world = client.get_world()
        if world.get_map().name.split("/")[-1] != self.cfg.town.split("/")[-1]:
            client.set_timeout(self.cfg.load_world_timeout_s)
            world = client.load_world(self.cfg.town)
            client.set_timeout(self.cfg.timeout_s)
        world.apply_settings(synchronous_settings(self.cfg))
        client.get_trafficmanager(self.cfg.tm_port).set_synchronous_mode(True)
        self._client, self._world, self._map = client, world, world.get_map()

    def _start_episode(self) -> _Episode:
        """Spawn the ego car at a random free spawn point, its route, sensors and NPCs; settle."""
        client, world, town = self._require_client(), self._require_world(), self._require_map()
        spawn_points = town.get_spawn_points()
        order = [int(i) for i in self.np_random.permutation(len(spawn_points))]
        ego_blueprint = world.get_blueprint_library().find(self.cfg.ego_blueprint)
        ego_blueprint.set_attribute("role_name", "hero")
        for ego_index in order[:SPAWN_ATTEMPTS]:
            actor = world.try_spawn_actor(ego_blueprint, spawn_points[ego_index])
            if actor is not None:
                break
        else:
            raise RuntimeError(f"CARLA could not spawn the ego car at {SPAWN_ATTEMPTS} spawn points of {self.cfg.town}")
        ego = _as_vehicle(actor)
        route = Route.through(self._plan_route(town.get_waypoint(spawn_points[ego_index].location)))
        episode = _Episode(ego=ego, ego_half_length=ego.bounding_box.extent.x, sensors=[], npc_ids=[],
                           npc_half_lengths=np.zeros(0), route=route)
        self._episode = episode  # from here on, reset and close destroy what is spawned
        self._attach_sensors(world, episode)
        client.get_trafficmanager(self.cfg.tm_port).set_random_device_seed(int(self.np_random.integers(2**31)))
        self._spawn_npcs(client, world, [spawn_points[i] for i in order if i != ego_index], episode)
        for _ in range(SETTLE_TICKS):
            frame = world.tick(self.cfg.timeout_s)
        # Measuring once sets speed, route position and camera frame, and discards the contacts
        # and lane crossings of the settling ticks: they are not the agent's doing.
        self._measure(episode, self._read_tick(episode, world, frame), steer=0.0)
        return episode

    def _plan_route(self, start: carla.Waypoint) -> np.ndarray:
        """Route waypoints ahead of `start` along its lane; at forks a random branch (seeded)."""
        points = [xy_from_location(start.transform.location)]
        waypoint = start
        for _ in range(math.ceil(self.cfg.route_length_m / self.cfg.route_spacing_m)):
            branches = waypoint.next(self.cfg.route_spacing_m)
            if not branches:
                break  # a dead end: the route stops here
            waypoint = branches[int(self.np_random.integers(len(branches)))]
            points.append(xy_from_location(waypoint.transform.location))
        if len(points) < 2:
            raise RuntimeError(f"no route from the spawn point at {start.transform.location} in {self.cfg.town}")
        return np.array(points)

    def _attach_sensors(self, world: carla.World, episode: _Episode) -> None:
        library = world.get_blueprint_library()
        collision = _as_sensor(world.spawn_actor(library.find("sensor.other.collision"), carla.Transform(), episode.ego))
        episode.sensors.append(collision)
        collision.listen(episode.collisions.put)
        invasion = _as_sensor(world.spawn_actor(library.find("sensor.other.lane_invasion"), carla.Transform(), episode.ego))
        episode.sensors.append(invasion)
        invasion.listen(episode.invasions.put)
        if self._wants_camera:
            blueprint = library.find("sensor.camera.rgb")
            blueprint.set_attribute("image_size_x", str(self.cfg.camera_width))
            blueprint.set_attribute("image_size_y", str(self.cfg.camera_height))
            blueprint.set_attribute("fov", str(self.cfg.camera_fov))
            camera = _as_sensor(world.spawn_actor(blueprint, CAMERA_MOUNT, episode.ego))
            episode.sensors.append(camera)
            camera.listen(episode.images.put)

    def _spawn_npcs(self, client: carla.Client, world: carla.World, free_points: list[carla.Transform],
                    episode: _Episode) -> None:
        """Up to n_npcs four-wheeled vehicles at free spawn points, driven by our traffic manager."""
        library = world.get_blueprint_library().filter("vehicle.*")
        blueprints = [bp for bp in library if bp.get_attribute("number_of_wheels").as_int() == 4]
        spawns = [
            carla.command.SpawnActor(blueprints[int(self.np_random.integers(len(blueprints)))], point)
            for point in free_points[: self.cfg.n_npcs]
        ]
        ids = [response.actor_id for response in client.apply_batch_sync(spawns) if not response.has_error()]
        episode.npc_ids = ids
        client.apply_batch_sync([carla.command.SetAutopilot(i, True, self.cfg.tm_port) for i in ids])
        episode.npc_half_lengths = np.array([world.get_actor(i).bounding_box.extent.x for i in ids])

    def _read_tick(self, episode: _Episode, world: carla.World, frame: int) -> Tick:
        """What the server reported for tick `frame`; the camera frame goes to the episode."""
        if self._wants_camera:
            episode.frame = self._camera_frame(episode, frame)
        town = self._require_map()
        snapshot = world.get_snapshot()
        ego = snapshot.find(episode.ego.id)
        transform = ego.get_transform()
        lane = town.get_waypoint(transform.location)
        others = [xy_from_location(snapshot.find(i).get_transform().location) for i in episode.npc_ids]
        return Tick(
            ego=pose_from_transform(transform),
            ego_half_length=episode.ego_half_length,
            speed=ego.get_velocity().length(),
            speed_limit=episode.ego.get_speed_limit() / 3.6,  # km/h -> m/s
            lane=pose_from_transform(lane.transform),
            lane_width=lane.lane_width,
            on_driving_lane=town.get_waypoint(transform.location, project_to_road=False) is not None,
            crossed_markings=tuple(marking.type.name for event in _drain(episode.invasions)
                                   for marking in event.crossed_lane_markings),
            collided=bool(_drain(episode.collisions)),
            others_xy=np.array(others).reshape(-1, 2),
            others_half_length=episode.npc_half_lengths,
        )

    def _measure(self, episode: _Episode, tick: Tick, steer: float) -> DrivingStep:
        """The DrivingStep of `tick`, remembered for the observation and the next step."""
        step, episode.previous = driving_step(tick, steer, episode.previous, episode.route, self.cfg.target_speed,
                                              self.cfg.fixed_delta_seconds)
        episode.pose, episode.last = tick.ego, step
        return step

    def _camera_frame(self, episode: _Episode, frame: int) -> np.ndarray:
        """The camera image of tick `frame` (older ones are dropped), as (3, H, W)."""
        while True:
            try:
                image = episode.images.get(timeout=self.cfg.timeout_s)
            except queue.Empty:
                raise CarlaConnectionError(self.cfg.host, self.cfg.port, self.cfg.timeout_s,
                                           f"no camera image for frame {frame}") from None
            if image.frame >= frame:
                return image_to_chw(image.raw_data, image.height, image.width)

    def _observe(self, episode: _Episode) -> Observation:
        last = episode.last
        assert last is not None, "an episode is measured once before its first observation"
        waypoints = to_ego_frame(upcoming_waypoints(episode.route.points, episode.previous.segment, N_WAYPOINTS),
                                 episode.pose.xy, episode.pose.yaw)
        vector = vector_observation(last.speed, last.lateral_offset, last.heading_error, waypoints, last.gap_ahead)
        if self.cfg.observation == "vector":
            return vector
        assert episode.frame is not None
        return {"image": episode.frame, "vector": vector}

    def _destroy_actors(self) -> None:
        """Destroy what the current episode spawned: sensors first (they stop streaming), then vehicles."""
        episode, self._episode = self._episode, None
        if episode is None or self._client is None:
            return
        for sensor in episode.sensors:
            with contextlib.suppress(RuntimeError):
                sensor.stop()  # type: ignore[no-untyped-call]  # the stub leaves stop() unannotated
        ids = [sensor.id for sensor in episode.sensors] + episode.npc_ids + [episode.ego.id]
        try:
            with self._server_calls():
                self._client.apply_batch_sync([carla.command.DestroyActor(i) for i in ids])
        except CarlaConnectionError as err:
            log.warning("could not destroy %d CARLA actors (the server is gone, and they with it): %s", len(ids), err)

    def _require_episode(self) -> _Episode:
        if self._episode is None:
            raise RuntimeError("call reset() before step(): no CARLA episode is running")
        return self._episode

    def _require_client(self) -> carla.Client:
        assert self._client is not None
        return self._client

    def _require_world(self) -> carla.World:
        if self._world is None:
            raise RuntimeError(f"not connected to CARLA at {self.address}: call reset() to reconnect")
        return self._world

    def _require_map(self) -> carla.Map:
        assert self._map is not None
        return self._map


def _as_vehicle(actor: carla.Actor) -> carla.Vehicle:
    if not isinstance(actor, carla.Vehicle):
        raise TypeError(f"expected a vehicle, CARLA spawned {actor.type_id}")
    return actor


def _as_sensor(actor: carla.Actor) -> carla.Sensor:
    if not isinstance(actor, carla.Sensor):
        raise TypeError(f"expected a sensor, CARLA spawned {actor.type_id}")
    return actor


def _drain(events: queue.SimpleQueue[Any]) -> list[Any]:
    """Everything queued so far (the sensors' callbacks run on the client's threads)."""
    drained = []
    while True:
        try:
            drained.append(events.get_nowait())
        except queue.Empty:
            return drained
