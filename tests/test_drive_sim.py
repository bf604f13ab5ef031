"""The embedded simulator's parts: road geometry, ego bicycle model, IDM traffic, raster."""

import math

import numpy as np
import pytest

from envs.drive.raster import EGO_VALUE, BirdsEye
from envs.drive.road import Road
from envs.drive.traffic import (
    EGO_CLEARANCE,
    idm_acceleration,
    npc_capacity,
    npc_leaders,
    spawn_npcs,
)
from envs.drive.vehicle import CAR_LENGTH, MAX_BRAKE, EgoState, bicycle_step

ROAD = Road(length=1000.0, n_bends=5, bend_amplitude=0.25, n_lanes=3, lane_width=3.5)


def test_loop_closes_and_its_heading_matches_its_curvature():
    assert abs(ROAD.table_x[-1] - ROAD.table_x[0]) < 1e-6 and abs(ROAD.table_y[-1] - ROAD.table_y[0]) < 1e-6
    s = np.linspace(0, 1000, 50)
    numeric = (ROAD.heading(s + 1e-4) - ROAD.heading(s - 1e-4)) / 2e-4
    np.testing.assert_allclose(numeric, [ROAD.curvature(v) for v in s], rtol=1e-5)
    assert ROAD.heading(np.array([1000.0]))[0] == pytest.approx(2 * math.pi)  # one full turn


def test_lateral_offset_is_perpendicular_to_the_road():
    s = np.array([10.0, 333.3, 777.0])
    x0, y0, theta = ROAD.to_world(s, np.zeros(3))
    x1, y1, _ = ROAD.to_world(s, np.full(3, 2.0))
    np.testing.assert_allclose(np.hypot(x1 - x0, y1 - y0), 2.0)
    np.testing.assert_allclose((x1 - x0) * np.cos(theta) + (y1 - y0) * np.sin(theta), 0.0, atol=1e-9)  # no along-road part
    # d > 0 is to the left: (cos, sin) x (dx, dy) > 0
    assert np.all(np.cos(theta) * (y1 - y0) - np.sin(theta) * (x1 - x0) > 0)


def test_lane_index_and_wrapped_gaps():
    assert [ROAD.lane_index(d) for d in (-4.0, -1.9, -1.6, 0.0, 1.6, 1.9, 9.0)] == [0, 0, 1, 1, 1, 2, 2]
    np.testing.assert_allclose(ROAD.signed_gap(np.array([5.0, 995.0]), 990.0), [15.0, 5.0])


def test_straight_ahead_on_a_straight_road_keeps_the_lane():
    state = EgoState(s=0.0, d=1.0, psi=0.0, v=10.0)
    next_state, accel, progress = bicycle_step(state, 0.0, 0.0, 0.0, kappa=0.0, dt=0.1, road_length=1000.0)
    assert next_state.d == 1.0 and next_state.psi == 0.0
    assert progress == pytest.approx(next_state.v * 0.1) and accel < 0  # drag only


def test_steering_left_turns_left_and_braking_stops_without_reversing():
    state = EgoState(s=0.0, d=0.0, psi=0.0, v=10.0)
    for _ in range(5):
        state, _, _ = bicycle_step(state, 0.5, 0.5, 0.0, kappa=0.0, dt=0.1, road_length=1000.0)
    assert state.psi > 0 and state.d > 0
    for _ in range(30):
        state, accel, _ = bicycle_step(state, 0.0, 0.0, 1.0, kappa=0.0, dt=0.1, road_length=1000.0)
    assert state.v == 0.0 and accel >= -MAX_BRAKE - 1.0


def test_following_the_road_curvature_needs_no_heading_change():
    kappa = ROAD.curvature(0.0)
    steer = math.atan(kappa * 2.7) / 0.5  # wheel angle of a circle of radius 1 / kappa
    state, _, _ = bicycle_step(EgoState(0.0, 0.0, 0.0, 10.0), steer, 0.0, 0.0, kappa, 0.1, 1000.0)
    assert abs(state.psi) < 1e-9


def test_idm_cruises_at_desired_speed_brakes_for_a_close_leader_and_caps_braking():
    v0 = np.array([10.0, 10.0, 10.0, 10.0])
    accel = idm_acceleration(
        v=np.array([10.0, 5.0, 10.0, 10.0]), v0=v0, gap=np.array([np.inf, np.inf, 10.0, 0.5]),
        closing_speed=np.array([0.0, 0.0, 5.0, 10.0]),
    )
    assert accel[0] == pytest.approx(0.0)  # at desired speed on a free road
    assert accel[1] > 0  # below it: speeds up
    assert accel[2] < 0  # closing in on a leader: brakes
    assert accel[3] == -MAX_BRAKE  # emergency: as hard as the car can


def test_leaders_are_the_nearest_car_ahead_in_the_same_lane_including_the_ego():
    npc_s = np.array([10.0, 50.0, 30.0, 990.0])
    lanes = np.array([0, 0, 1, 0])
    same_lane = lanes[:, None] == lanes[None, :]
    np.fill_diagonal(same_lane, False)
    ahead = np.append(npc_s, 20.0)[None, :] - npc_s[:, None]  # ego at s=20
    in_ego_lane = lanes == 1  # ego overlaps lane 1 only
    gap, leader = npc_leaders(ahead, same_lane, in_ego_lane, road_length=1000.0)
    np.testing.assert_array_equal(leader, [1, 3, 4, 0])  # NPC 1 wraps round the loop to NPC 3
    np.testing.assert_allclose(gap, np.array([40.0, 940.0, 990.0, 20.0]) - CAR_LENGTH)


def test_spawn_uses_distinct_slots_away_from_the_ego():
    rng = np.random.default_rng(0)
    n = npc_capacity(1000.0, 3)
    s, lanes = spawn_npcs(rng, n, 1000.0, 3, ego_s=500.0)
    assert len(set(zip(np.round(s // 25), lanes))) <= n and len(s) == n
    assert np.all(np.abs(s - 500.0) > EGO_CLEARANCE - 5.0)
    for lane in range(3):
        ordered = np.sort(s[lanes == lane])
        assert np.all(np.diff(ordered) > CAR_LENGTH)
    with pytest.raises(ValueError):
        spawn_npcs(rng, n + 1, 1000.0, 3, ego_s=500.0)


def test_raster_shows_the_road_under_the_ego_and_a_car_ahead():
    view = BirdsEye(ROAD, image_size=64, metres_per_pixel=0.5)
    s = np.array([210.0, 200.0])  # cars: an NPC, then the ego 10 m behind it in the same lane
    x, y, yaw = ROAD.to_world(s, np.zeros(2))
    image = view.draw(float(x[1]), float(y[1]), float(yaw[1]), x, y, yaw)
    assert image.shape == (3, 64, 64) and image.dtype == np.uint8
    row, col = view.ego_row, view.ego_col
    assert image[0, row, col] == 255  # on the road
    assert image[0, row, 0] == 0 and image[0, row, -1] == 0  # 16 m to either side is off the road
    assert image[2, row, col] == EGO_VALUE
    assert image[2, row - 20, col] == 255  # 10 m ahead at 0.5 m per pixel
    assert image[2, row - 10, col] == 0  # the gap between them
    lane_mark_cols = np.flatnonzero(image[1, row])
    assert lane_mark_cols.size > 0 and np.all(np.abs(lane_mark_cols - col) >= 2)  # marks beside, not under, the ego


def test_raster_turns_with_the_ego():
    view = BirdsEye(ROAD, image_size=64, metres_per_pixel=0.5)
    x, y, yaw = ROAD.to_world(np.array([0.0]), np.zeros(1))  # drifts < 2 m over the 16 m half-view
    across = view.draw(float(x[0]), float(y[0]), float(yaw[0]) + math.pi / 2, x, y, yaw + math.pi / 2)
    row, col = view.ego_row, view.ego_col
    assert across[0, row, 0] == 255 and across[0, row, -1] == 255  # the road now runs left to right
    assert across[0, row - 20, col] == 0 and across[0, row + 12, col] == 0  # 10 m ahead / 6 m behind: off it
