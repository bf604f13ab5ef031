"""Reward terms of envs.driving: each term's sign and shape on hand-made steps, and the range."""

import dataclasses
import math

import numpy as np
import pytest
from pydantic import ValidationError

from envs.driving.reward import REWARD_RANGE, TERM_NAMES, DrivingStep, RewardConfig, reward_terms, total_reward

CFG = RewardConfig()
# On target speed, centred, steady controls, free road, 1 m of progress.
CRUISE = DrivingStep(
    speed=10.0, target_speed=10.0, lateral_offset=0.0, heading_error=0.0, lane_half_width=1.75,
    accel=0.0, prev_accel=0.0, steer=0.0, prev_steer=0.0, dt=0.1, collided=False, off_road=False,
    gap_ahead=math.inf, progress=1.0, waypoints_reached=0,
)


def terms_of(**changes):
    return reward_terms(dataclasses.replace(CRUISE, **changes), CFG)


def test_cruising_earns_efficiency_and_progress_and_nothing_else():
    terms = reward_terms(CRUISE, CFG)
    assert set(terms) == set(TERM_NAMES)
    assert terms == {"efficiency": CFG.efficiency_weight, "lane_keeping": 0.0, "comfort": 0.0, "safety": 0.0,
                     "progress": CFG.progress_weight * 1.0}
    assert total_reward(terms) == pytest.approx(CFG.efficiency_weight + CFG.progress_weight)


def test_efficiency_peaks_at_target_is_zero_at_standstill_and_floored():
    speeds = [0.0, 5.0, 10.0, 15.0, 40.0]
    values = [terms_of(speed=v)["efficiency"] for v in speeds]
    assert values[0] == 0.0  # standing still earns nothing
    assert values[1] == pytest.approx(CFG.efficiency_weight / 2)
    assert values[2] == max(values)
    assert values[3] < values[2]
    assert values[4] == -CFG.efficiency_weight  # floored, however fast


def test_lane_keeping_is_a_penalty_growing_with_offset_and_heading_error():
    centred = terms_of()["lane_keeping"]
    small, large = terms_of(lateral_offset=0.5)["lane_keeping"], terms_of(lateral_offset=-1.5)["lane_keeping"]
    assert centred == 0.0 > small > large
    assert terms_of(lateral_offset=-0.5)["lane_keeping"] == small  # symmetric
    assert terms_of(heading_error=0.3)["lane_keeping"] < 0.0
    worst = terms_of(lateral_offset=5.0, heading_error=math.pi)["lane_keeping"]
    assert worst == -(CFG.lateral_weight + CFG.heading_weight)


def test_comfort_penalises_jerk_and_steering_rate_up_to_its_cap():
    assert terms_of(accel=2.0, prev_accel=2.0, steer=0.4, prev_steer=0.4)["comfort"] == 0.0
    jerk = terms_of(accel=1.0, prev_accel=0.0)["comfort"]
    assert jerk == pytest.approx(-CFG.jerk_weight * 1.0 / 0.1)
    steer = terms_of(steer=0.2, prev_steer=-0.2)["comfort"]
    assert steer == pytest.approx(-CFG.steer_rate_weight * 0.4 / 0.1)
    assert terms_of(accel=100.0, prev_accel=-100.0, steer=1, prev_steer=-1, dt=0.001)["comfort"] == -CFG.comfort_cap


def test_collision_hits_the_safety_term_hard():
    collided = terms_of(collided=True)
    assert collided["safety"] == -CFG.collision_penalty == -50.0
    assert total_reward(collided) < -40.0
    assert terms_of(off_road=True)["safety"] == -CFG.off_road_penalty


def test_safety_is_floored_at_the_declared_minimum():
    everything = terms_of(collided=True, off_road=True, gap_ahead=0.0)
    assert everything["safety"] == REWARD_RANGE[0]


def test_near_miss_penalty_grows_as_the_gap_closes():
    safe_gap = CFG.near_miss_gap + CFG.near_miss_headway * 10.0
    assert terms_of(gap_ahead=math.inf)["safety"] == 0.0
    assert terms_of(gap_ahead=safe_gap + 1.0)["safety"] == 0.0
    half, touching = terms_of(gap_ahead=safe_gap / 2)["safety"], terms_of(gap_ahead=0.0)["safety"]
    assert half == pytest.approx(-CFG.near_miss_penalty / 2)
    assert touching == -CFG.near_miss_penalty


def test_progress_counts_metres_and_waypoints():
    assert terms_of(progress=2.5)["progress"] == pytest.approx(2.5 * CFG.progress_weight)
    with_bonus = terms_of(progress=1.0, waypoints_reached=2)["progress"]
    assert with_bonus == pytest.approx(CFG.progress_weight + 2 * CFG.waypoint_bonus)


def test_total_is_the_sum_clipped_to_the_declared_range():
    assert total_reward({"a": 1.5, "b": -0.5}) == 1.0
    assert total_reward({"a": 500.0}) == REWARD_RANGE[1]
    assert total_reward({"a": -30.0, "b": -30.0}) == REWARD_RANGE[0]


def test_random_steps_stay_in_range_and_typical_ones_in_minus_10_to_20():
    rng = np.random.default_rng(0)
    totals = []
    for _ in range(2000):
        step = DrivingStep(
            speed=rng.uniform(0, 30), target_speed=rng.uniform(5, 15), lateral_offset=rng.normal(0, 1),
            heading_error=rng.uniform(-math.pi, math.pi), lane_half_width=1.75, accel=rng.uniform(-8, 3),
            prev_accel=rng.uniform(-8, 3), steer=rng.uniform(-1, 1), prev_steer=rng.uniform(-1, 1), dt=0.1,
            collided=rng.random() < 0.05, off_road=rng.random() < 0.05, gap_ahead=rng.exponential(30),
            progress=rng.uniform(0, 3), waypoints_reached=int(rng.integers(0, 2)),
        )
        totals.append(total_reward(reward_terms(step, CFG)))
    totals = np.array(totals)
    assert REWARD_RANGE[0] <= totals.min() and totals.max() <= REWARD_RANGE[1]
    assert np.mean((totals > -10) & (totals < 20)) > 0.8


@pytest.mark.parametrize("field", ["dt", "target_speed", "lane_half_width"])
def test_non_positive_scales_are_rejected_by_name(field):
    with pytest.raises(ValueError, match=f"DrivingStep.{field} must be > 0"):
        terms_of(**{field: 0.0})


def test_config_rejects_unknown_and_negative_weights():
    with pytest.raises(ValidationError, match="colision_penalty"):
        RewardConfig(colision_penalty=10.0)
    with pytest.raises(ValidationError, match="progress_weight"):
        RewardConfig(progress_weight=-1.0)
