"""Observation layout, ego-frame transform and action mapping of envs.driving."""

import math

import numpy as np
import pytest
from gymnasium import spaces

from envs.driving.observation import (
    ACTION_SPACE,
    GAP_SCALE,
    LATERAL_SCALE,
    N_WAYPOINTS,
    SPEED_SCALE,
    VECTOR_BOUND,
    WAYPOINT_SCALE,
    action_to_controls,
    driving_observation_space,
    to_ego_frame,
    vector_observation,
)


def test_ego_frame_puts_the_heading_on_x_and_the_left_on_y():
    ego, yaw = (1.0, 2.0), math.pi / 2  # facing +y
    points = np.array([[1.0, 5.0], [0.0, 2.0], [2.0, 2.0], [1.0, 1.0]])  # ahead, left, right, behind
    expected = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, -1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(to_ego_frame(points, ego, yaw), expected, atol=1e-12)


def test_ego_frame_preserves_distances_and_inverts():
    rng = np.random.default_rng(1)
    points, ego, yaw = rng.normal(size=(20, 2)) * 10, rng.normal(size=2), 2.3
    local = to_ego_frame(points, ego, yaw)
    np.testing.assert_allclose(np.linalg.norm(local, axis=1), np.linalg.norm(points - ego, axis=1))
    rotation = np.array([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    np.testing.assert_allclose(local @ rotation.T + ego, points)


def test_spaces_dict_with_image_or_vector_alone():
    space = driving_observation_space((3, 64, 48))
    assert isinstance(space, spaces.Dict)
    assert space["image"].shape == (3, 64, 48) and space["image"].dtype == np.uint8
    assert space["vector"].shape == (4 + 2 * N_WAYPOINTS,) and space["vector"].dtype == np.float32
    vector_only = driving_observation_space(None, n_waypoints=3)
    assert isinstance(vector_only, spaces.Box) and vector_only.shape == (10,)
    with pytest.raises(ValueError, match="image_shape"):
        driving_observation_space((64, 64))
    with pytest.raises(ValueError, match="n_waypoints"):
        driving_observation_space(None, n_waypoints=0)


def test_vector_layout_and_scales():
    waypoints = np.array([[5.0, 0.5], [10.0, 1.0]])
    vector = vector_observation(8.0, -0.7, 0.1, waypoints, gap_ahead=20.0)
    assert vector.dtype == np.float32
    expected = [8.0 / SPEED_SCALE, -0.7 / LATERAL_SCALE, 0.1, 20.0 / GAP_SCALE, *(waypoints.ravel() / WAYPOINT_SCALE)]
    np.testing.assert_allclose(vector, expected, rtol=1e-6)
    assert driving_observation_space(None, n_waypoints=2).contains(vector)


def test_vector_saturates_instead_of_leaving_its_space():
    free_road = vector_observation(0.0, 0.0, 0.0, np.zeros((N_WAYPOINTS, 2)))
    assert free_road[3] == 1.0  # nothing ahead reads as a gap of GAP_SCALE
    wild = vector_observation(1e6, -1e6, 0.0, np.full((N_WAYPOINTS, 2), 1e6), gap_ahead=1e6)
    assert wild.max() == VECTOR_BOUND and wild.min() == -VECTOR_BOUND
    assert driving_observation_space(None).contains(wild)
    with pytest.raises(ValueError, match="waypoints_ego"):
        vector_observation(1.0, 0.0, 0.0, np.zeros(10))


@pytest.mark.parametrize(
    ("action", "controls"),
    [((0.3, 0.5), (0.3, 0.5, 0.0)), ((-1.0, -0.25), (-1.0, 0.0, 0.25)), ((2.0, -3.0), (1.0, 0.0, 1.0)), ((0, 0), (0, 0, 0))],
)
def test_action_maps_to_steer_and_one_pedal(action, controls):
    assert action_to_controls(np.array(action, dtype=np.float32)) == pytest.approx(controls)


def test_action_space_is_steer_and_pedal_in_unit_box():
    assert ACTION_SPACE.shape == (2,)
    np.testing.assert_array_equal(ACTION_SPACE.low, [-1, -1])
    np.testing.assert_array_equal(ACTION_SPACE.high, [1, 1])
