"""The CARLA env's parts that run without a server, checked with the real client's types."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import carla
import numpy as np
import pytest
from pydantic import ValidationError

import envs
from envs.carla.client import CarlaConnectionError, CarlaVersionError
from envs.carla.config import CarlaConfig
from envs.carla.convert import (
    Pose,
    image_to_chw,
    is_off_road,
    pose_from_transform,
    synchronous_settings,
    vehicle_control,
    xy_from_location,
)
from envs.carla.env import CarlaEnv
from envs.carla.measure import Previous, Route, Tick, driving_step
from envs.carla.route import (
    SEARCH_SEGMENTS,
    arc_lengths,
    gap_ahead,
    lane_errors,
    project_on_route,
    upcoming_waypoints,
    wrap_angle,
)
from envs.driving import REWARD_RANGE

REPO = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def test_config_defaults_match_the_scenario():
    cfg = CarlaConfig()
    assert (cfg.host, cfg.port, cfg.tm_port, cfg.n_npcs) == ("127.0.0.1", 2000, 8000, 20)
    assert cfg.image_shape == (3, 84, 84)
    assert CarlaConfig(observation="vector").image_shape is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"prot": 2000}, "prot"),
        ({"fixed_delta_seconds": 0.2}, "fixed_delta_seconds"),
        ({"observation": "lidar"}, "observation"),
        ({"reward": {"collision_penalty": -1}}, "collision_penalty"),
        ({"port": 70000}, "port"),
    ],
)
def test_bad_setting_is_one_error_naming_it(settings, message):
    with pytest.raises(ValidationError, match=message):
        CarlaConfig(**settings)


def test_nested_driving_settings_reach_the_shared_configs():
    cfg = CarlaConfig(reward={"collision_penalty": 30.0}, termination={"stuck_steps": 20})
    assert (cfg.reward.collision_penalty, cfg.termination.stuck_steps) == (30.0, 20)


def test_world_settings_are_synchronous_with_the_fixed_step():
    settings = synchronous_settings(CarlaConfig(fixed_delta_seconds=0.05))
    assert isinstance(settings, carla.WorldSettings)
    assert settings.synchronous_mode and settings.fixed_delta_seconds == pytest.approx(0.05)
    assert not settings.no_rendering_mode
    assert synchronous_settings(CarlaConfig(observation="vector")).no_rendering_mode  # no camera, no rendering


# ---------------------------------------------------------------------------------------------
# CARLA frame -> project frame, controls, images
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("yaw_deg", [0.0, 30.0, 90.0, -135.0, 179.0])
def test_pose_heading_agrees_with_carlas_own_forward_vector(yaw_deg):
    transform = carla.Transform(carla.Location(x=3.0, y=-4.0), carla.Rotation(yaw=yaw_deg))
    pose = pose_from_transform(transform)
    forward = transform.get_forward_vector()
    assert (pose.x, pose.y) == (3.0, 4.0)
    assert (math.cos(pose.yaw), math.sin(pose.yaw)) == pytest.approx(xy_from_location(carla.Location(forward)), abs=1e-6)


def test_a_car_left_of_its_lane_has_a_positive_offset():
    lane = carla.Transform(carla.Location(x=10.0, y=5.0), carla.Rotation(yaw=30.0))
    right = lane.get_right_vector()
    left_of_lane = carla.Location(x=10.0 - 1.5 * right.x, y=5.0 - 1.5 * right.y)
    car = carla.Transform(left_of_lane, carla.Rotation(yaw=40.0))  # turned 10 deg clockwise (rightwards)
    offset, heading_error = lane_errors(pose_from_transform(car), pose_from_transform(lane))
    assert offset == pytest.approx(1.5, abs=1e-6)
    assert heading_error == pytest.approx(-math.radians(10.0), abs=1e-6)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ([0.5, 0.8], (0.5, 0.8, 0.0)),  # throttle
        ([-0.2, -0.6], (-0.2, 0.0, 0.6)),  # brake, never both pedals
        ([3.0, 2.0], (1.0, 1.0, 0.0)),  # clipped into CARLA's ranges
    ],
)
def test_action_maps_to_a_carla_vehicle_control(action, expected):
    control = vehicle_control(np.array(action, dtype=np.float32))
    assert isinstance(control, carla.VehicleControl)
    assert (control.steer, control.throttle, control.brake) == pytest.approx(expected)


def test_camera_bgra_bytes_become_rgb_channels_first():
    bgra = np.zeros((2, 3, 4), dtype=np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 255  # B, G, R, A
    image = image_to_chw(bgra.tobytes(), height=2, width=3)
    assert image.shape == (3, 2, 3) and image.dtype == np.uint8
    assert (image[0] == 30).all() and (image[1] == 20).all() and (image[2] == 10).all()


def test_camera_bytes_of_the_wrong_size_are_refused():
    with pytest.raises(ValueError, match="expected 2x3x4 = 24"):
        image_to_chw(bytes(20), height=2, width=3)


def test_off_road_means_no_driving_lane_or_a_road_edge_crossed():
    assert not is_off_road(True, ["Broken", "Solid"])  # a lane change is not leaving the road
    assert is_off_road(True, [str(carla.LaneMarkingType.Curb)])
    assert is_off_road(False, [])


# ---------------------------------------------------------------------------------------------
# Route, progress and traffic ahead
# ---------------------------------------------------------------------------------------------


L_ROUTE = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [20.0, 10.0]])


def test_arc_lengths_and_projection_on_an_l_shaped_route():
    s = arc_lengths(L_ROUTE)
    assert s.tolist() == [0.0, 10.0, 20.0, 30.0]
    assert project_on_route(L_ROUTE, s, (12.0, 1.0), 0) == pytest.approx((12.0, 1))
    assert project_on_route(L_ROUTE, s, (21.0, 4.0), 1) == pytest.approx((24.0, 2))


def test_projection_does_not_jump_to_a_far_part_of_the_route_passing_nearby():
    # Out along y = 0, round a wide loop, and back along y = 1: near the start, both legs are close.
    out = np.stack([np.arange(0.0, 50.0), np.zeros(50)], axis=1)
    back = out[::-1] + [0.0, 1.0]
    route = np.concatenate([out, [[60.0, 0.5]], back])
    s = arc_lengths(route)
    position, segment = project_on_route(route, s, (5.0, 0.9), 0)  # nearer the way back
    assert segment < SEARCH_SEGMENTS and position == pytest.approx(5.0)


def test_upcoming_waypoints_repeat_the_last_point_past_the_end():
    assert upcoming_waypoints(L_ROUTE, 2, 3).tolist() == [[20.0, 10.0]] * 3
    assert upcoming_waypoints(L_ROUTE, 0, 2).tolist() == [[10.0, 0.0], [20.0, 0.0]]


def test_gap_ahead_counts_only_cars_ahead_in_the_lane():
    ego = Pose(0.0, 0.0, 0.0)
    others = np.array([[30.0, 0.5], [12.0, 3.5], [-8.0, 0.0]])  # ahead in lane, next lane, behind
    assert gap_ahead(ego, 2.0, others, np.full(3, 2.0), lane_half_width=1.75) == pytest.approx(26.0)
    assert gap_ahead(ego, 2.0, others[1:], np.full(2, 2.0), lane_half_width=1.75) == math.inf
    assert gap_ahead(ego, 2.0, np.zeros((0, 2)), np.zeros(0), lane_half_width=1.75) == math.inf


def test_gap_ahead_follows_the_ego_heading():
    ego = Pose(5.0, 5.0, math.pi / 2)  # facing +y
    assert gap_ahead(ego, 2.0, np.array([[5.0, 15.0]]), np.array([2.0]), 1.75) == pytest.approx(6.0)


def straight_tick(x: float, speed: float, **changes) -> Tick:
    """The ego on the centre of a lane along +x at (x, 0), alone on the road."""
    fields = dict(ego=Pose(x, 0.0, 0.0), ego_half_length=2.3, speed=speed, speed_limit=0.0, lane=Pose(x, 0.0, 0.0),
                  lane_width=3.5, on_driving_lane=True, crossed_markings=(), collided=False,
                  others_xy=np.zeros((0, 2)), others_half_length=np.zeros(0))
    return Tick(**{**fields, **changes})


STRAIGHT = Route.through(np.stack([np.arange(0.0, 100.0, 5.0), np.zeros(20)], axis=1))


def test_driving_step_measures_progress_waypoints_and_acceleration():
    previous = Previous(speed=4.0, accel=1.0, steer=0.1, s=3.0, segment=0)
    step, after = driving_step(straight_tick(11.0, speed=5.0), 0.3, previous, STRAIGHT, target_speed=8.0, dt=0.05)
    assert step.progress == pytest.approx(8.0)  # from s = 3 to s = 11
    assert step.waypoints_reached == 2  # passed the points at 5 and 10 m
    assert step.accel == pytest.approx(20.0) and step.prev_accel == 1.0  # (5 - 4) / 0.05
    assert (step.steer, step.prev_steer) == (0.3, 0.1)
    assert (step.lateral_offset, step.heading_error, step.lane_half_width) == (0.0, 0.0, 1.75)
    assert (step.collided, step.off_road, step.gap_ahead) == (False, False, math.inf)
    assert after == Previous(speed=5.0, accel=step.accel, steer=0.3, s=pytest.approx(11.0), segment=2)


def test_driving_step_caps_the_target_speed_at_the_road_limit():
    slow_road = straight_tick(1.0, 3.0, speed_limit=30 / 3.6)
    assert driving_step(slow_road, 0.0, Previous(), STRAIGHT, 12.0, 0.05)[0].target_speed == pytest.approx(30 / 3.6)
    assert driving_step(straight_tick(1.0, 3.0), 0.0, Previous(), STRAIGHT, 12.0, 0.05)[0].target_speed == 12.0


def test_driving_step_reports_collisions_road_edges_and_traffic():
    tick = straight_tick(20.0, 5.0, collided=True, crossed_markings=("Curb",), others_xy=np.array([[40.0, 0.2]]),
                         others_half_length=np.array([2.2]))
    step, _ = driving_step(tick, 0.0, Previous(s=20.0, segment=4), STRAIGHT, 8.0, 0.05)
    assert (step.collided, step.off_road) == (True, True)
    assert step.gap_ahead == pytest.approx(40.0 - 20.0 - 2.3 - 2.2)


def test_route_is_completed_near_its_end():
    assert not STRAIGHT.completed(STRAIGHT.length - 5.0)
    assert STRAIGHT.completed(STRAIGHT.length - 1.0)


def test_wrap_angle():
    assert wrap_angle(3 * math.pi / 2) == pytest.approx(-math.pi / 2)
    assert wrap_angle(-math.pi / 4) == pytest.approx(-math.pi / 4)


# ---------------------------------------------------------------------------------------------
# The env against no server and against a stand-in
# ---------------------------------------------------------------------------------------------


def test_env_against_a_closed_port_raises_one_clear_error_in_time():
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(CarlaConnectionError, match=rf"CARLA server at 127\.0\.0\.1:{port} did not answer within 0\.5 s"):
        CarlaEnv(port=port, timeout_s=0.5)
    assert time.monotonic() - started < 5.0


def test_factory_builds_the_carla_env_from_settings():
    port = closed_port()
    with pytest.raises(CarlaConnectionError, match=f"127.0.0.1:{port}"):
        envs.make("carla", settings={"host": "127.0.0.1", "port": port, "timeout_s": 0.5})
    with pytest.raises(envs.EnvSettingsError, match="towns"):
        envs.make("carla", settings={"towns": "Town03"})


def test_env_declares_the_driving_reward_range_and_spaces_without_a_server(monkeypatch):
    # Spaces and the declared range come from the config alone; connecting is the last step.
    monkeypatch.setattr(CarlaEnv, "_connect", lambda self: None)
    env = CarlaEnv(observation="image", camera_width=64, camera_height=48)
    assert env.reward_range == REWARD_RANGE
    assert envs.declared_reward_range(env) == REWARD_RANGE
    assert env.observation_space["image"].shape == (3, 48, 64)
    assert env.action_space.shape == (2,)
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        env.step(np.zeros(2, dtype=np.float32))


def test_env_version_mismatch_is_reported_before_anything_else():
    port = closed_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.support.carla_standin", f"-carla-rpc-port={port}",
                               "-standin-version=0.9.15"], env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                CarlaEnv(port=port, timeout_s=0.5)
            except CarlaConnectionError:
                time.sleep(0.1)  # not listening yet
                continue
            except CarlaVersionError as err:
                assert "runs version 0.9.15 but the carla client package is 0.9.16" in str(err)
                return
        pytest.fail("the stand-in server never answered")
    finally:
        server.kill()
        server.wait()
