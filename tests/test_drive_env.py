"""Drive-v0 as a whole: gymnasium contract, determinism, info, episode ends, traffic, settings."""

import math
import subprocess
import sys

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs import EnvSettingsError
from envs.drive.env import DriveEnv
from envs.drive.vehicle import CAR_LENGTH, MAX_STEER, WHEELBASE, EgoState
from envs.driving.observation import GAP_SCALE, N_SCALARS, SPEED_SCALE, WAYPOINT_SCALE
from envs.driving.reward import REWARD_RANGE, TERM_NAMES, total_reward
from envs.driving.termination import TIME_LIMIT
from tests.support.notebook import project_env


def pure_pursuit(vector: np.ndarray, target_speed: float = 10.0) -> np.ndarray:
    """A scripted driver reading only the vector observation: steer to the 2nd waypoint, keep a gap."""
    x, y = vector[N_SCALARS + 2 : N_SCALARS + 4] * WAYPOINT_SCALE
    steer = math.atan2(2 * WHEELBASE * y, x * x + y * y) / MAX_STEER
    speed, gap = vector[0] * SPEED_SCALE, vector[3] * GAP_SCALE
    wanted = min(target_speed, max(gap - 5.0, 0.0) / 1.5)
    return np.array([np.clip(steer, -1, 1), np.clip(0.5 * (wanted - speed), -1, 1)], dtype=np.float32)


def run(env, policy, max_steps=10_000):
    obs, _ = env.reset()
    for _ in range(max_steps):
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        if terminated or truncated:
            return terminated, truncated, info
    raise AssertionError("episode did not end")


def test_import_envs_registers_drive_v0_without_loading_the_simulator():
    """As ``import highway_env`` registers its envs: a fresh interpreter, nothing imported but ``envs``."""
    program = (
        "import sys, gymnasium, envs\n"
        "assert 'Drive-v0' in gymnasium.registry\n"
        "assert 'envs.drive' not in sys.modules, 'import envs loaded the simulator'\n"
        "env = gymnasium.make('Drive-v0', observation='vector')\n"
        "print(type(env.unwrapped).__name__, env.observation_space.shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                          env=project_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("DriveEnv (")


@pytest.mark.parametrize("observation", ["image", "vector"])
def test_passes_gymnasium_env_checker(observation):
    env = gymnasium.make("Drive-v0", observation=observation, render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)


@pytest.mark.parametrize("settings", [{"n_npcs": 0}, {"n_lanes": 1, "n_npcs": 5}, {"road_length": 200.0, "n_npcs": 10, "bend_amplitude": 0.0}])
def test_edge_scenarios_run_and_stay_in_their_spaces(settings):
    env = DriveEnv(seed=0, **settings)
    obs, _ = env.reset()
    for _ in range(30):
        obs, _, terminated, truncated, _ = env.step(np.array([0.0, 0.5], dtype=np.float32))
        assert env.observation_space.contains(obs)
        if terminated or truncated:
            obs, _ = env.reset()


def test_image_mode_observation_is_the_shared_dict_layout():
    env = DriveEnv(image_size=48)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["image"].shape == (3, 48, 48) and obs["image"].dtype == np.uint8
    assert 128 in obs["image"][2] and set(np.unique(obs["image"][2])) <= {0, 128, 255}  # the ego, maybe NPCs


def test_same_seed_same_episode_and_other_seed_another():
    actions = np.random.default_rng(0).uniform(-0.3, 1, size=(60, 2)).astype(np.float32)

    def rollout(seed):
        env = DriveEnv()
        first, _ = env.reset(seed=seed)
        trace = [first["image"], first["vector"]]
        for action in actions:
            obs, reward, terminated, truncated, _ = env.step(action)
            trace += [obs["image"], obs["vector"], np.array([reward])]
            if terminated or truncated:
                break
        return trace

    a, b, c = rollout(3), rollout(3), rollout(4)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_config_seed_seeds_the_first_reset():
    a, b = DriveEnv(observation="vector", seed=7), DriveEnv(observation="vector")
    np.testing.assert_array_equal(a.reset()[0], b.reset(seed=7)[0])


def test_declares_the_shared_reward_range():
    env = gymnasium.make("Drive-v0", observation="vector")
    assert env.unwrapped.reward_range == REWARD_RANGE == (-50.0, 200.0)


def test_render_gives_an_rgb_frame_in_both_modes():
    for observation in ("image", "vector"):
        env = DriveEnv(observation=observation, render_mode="rgb_array", image_size=32, render_scale=3)
        env.reset(seed=0)
        env.step(env.action_space.sample())
        frame = env.render()
        assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8
        assert len(np.unique(frame.reshape(-1, 3), axis=0)) >= 3  # grass, road, marks at least
    assert DriveEnv().render() is None  # no render_mode, no frame


def test_every_step_reports_its_reward_terms_and_the_end_its_reason():
    env = DriveEnv(observation="vector", seed=1)
    obs, _ = env.reset()
    while True:
        obs, reward, terminated, truncated, info = env.step(pure_pursuit(obs))
        assert set(info["reward_terms"]) == set(TERM_NAMES)
        assert reward == total_reward(info["reward_terms"])
        assert REWARD_RANGE[0] <= reward <= REWARD_RANGE[1]
        if terminated or truncated:
            break
    assert info["termination_reason"] == "route_completed"
    assert info["distance"] >= env.config.route_length


def test_scripted_driver_far_outscores_random_actions():
    scripted_env, random_env = DriveEnv(observation="vector", seed=2), DriveEnv(observation="vector", seed=2)
    rng = np.random.default_rng(0)

    def episode_return(env, policy):
        obs, _ = env.reset()
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total, done = total + reward, terminated or truncated
        return total

    scripted = episode_return(scripted_env, pure_pursuit)
    random = np.mean([episode_return(random_env, lambda _: rng.uniform(-1, 1, 2).astype(np.float32)) for _ in range(3)])
    assert scripted > 1000.0 and scripted > random + 1000.0


def test_time_limit_truncates_and_is_reported_apart_from_termination():
    env = DriveEnv(observation="vector", max_episode_steps=20, seed=0)
    terminated, truncated, info = run(env, pure_pursuit)
    assert truncated and not terminated
    assert info["truncation_reason"] == TIME_LIMIT and "termination_reason" not in info


def test_driving_into_a_stopped_car_is_a_collision():
    env = DriveEnv(observation="vector", seed=0)
    env.reset()
    env.npc_v0[0] = env.npc_v[0] = 0.01  # NPC 0 stands still
    env.ego = EgoState(s=float(env.npc_s[0]) - 12.0, d=float(env.npc_d[0]), psi=0.0, v=15.0)
    for _ in range(20):
        _, reward, terminated, _, info = env.step(np.array([0.0, 1.0], dtype=np.float32))
        if terminated:
            break
    assert info["termination_reason"] == "collision"
    assert info["reward_terms"]["safety"] <= -50.0 and reward < -40.0


def test_steering_hard_leaves_the_road():
    env = DriveEnv(observation="vector", seed=0)
    terminated, _, info = run(env, lambda _: np.array([1.0, 0.5], dtype=np.float32))
    assert terminated and info["termination_reason"] == "off_road"


def test_standing_still_gets_stuck():
    env = DriveEnv(observation="vector", seed=0, termination={"stuck_steps": 10})
    terminated, _, info = run(env, lambda _: np.array([0.0, -1.0], dtype=np.float32))
    assert terminated and info["termination_reason"] == "stuck"


def test_npcs_keep_their_lanes_and_never_overlap_in_dense_traffic():
    env = DriveEnv(observation="vector", n_npcs=80, seed=5, max_episode_steps=400)
    obs, _ = env.reset()
    lanes, d = env.npc_lane.copy(), env.npc_d.copy()
    for _ in range(400):
        obs, _, terminated, truncated, _ = env.step(pure_pursuit(obs))
        assert np.array_equal(env.npc_lane, lanes) and np.array_equal(env.npc_d, d)
        np.testing.assert_array_equal(env.npc_d, env.road.lane_centres[env.npc_lane])
        gaps = env.road.signed_gap(env.npc_s[None, :], env.npc_s[:, None])
        same_lane = (lanes[:, None] == lanes[None, :]) & ~np.eye(len(lanes), dtype=bool)
        assert np.all(np.abs(gaps[same_lane]) >= CAR_LENGTH), "two NPCs overlap in one lane"
        assert np.all(env.npc_v >= 0.0)
        if terminated or truncated:
            obs, _ = env.reset()
            lanes, d = env.npc_lane.copy(), env.npc_d.copy()


def test_gap_ahead_sees_the_nearest_npc_in_the_ego_lane():
    env = DriveEnv(observation="vector", n_npcs=2, seed=0)
    env.reset()
    env.npc_s, env.npc_lane = np.array([100.0, 110.0]), np.array([1, 2])  # lane 1 at 100 m, lane 2 at 110 m
    env.npc_d = env.road.lane_centres[env.npc_lane]
    for lane, expected in [(1, 20.0 - CAR_LENGTH), (2, 30.0 - CAR_LENGTH), (0, math.inf)]:
        env.ego = EgoState(s=80.0, d=float(env.road.lane_centres[lane]) + 0.3, psi=0.0, v=5.0)
        assert env._gap_ahead() == pytest.approx(expected)


def test_bad_settings_fail_with_one_clear_error():
    with pytest.raises(EnvSettingsError, match=r"n_npc: unknown key; allowed: n_npcs"):
        gymnasium.make("Drive-v0", n_npc=5)
    with pytest.raises(EnvSettingsError, match=r"observation: Input should be 'image' or 'vector'"):
        DriveEnv(observation="rgb")
    with pytest.raises(EnvSettingsError, match=r"reward.colision: unknown key; allowed: efficiency_weight"):
        DriveEnv(reward={"colision": 1.0})
    with pytest.raises(EnvSettingsError, match=r"n_npcs=500 does not fit"):
        DriveEnv(n_npcs=500)
    with pytest.raises(EnvSettingsError, match=r"bend_amplitude=2 .* bends tighter than the road is wide"):
        DriveEnv(bend_amplitude=2.0, n_bends=20)
    with pytest.raises(EnvSettingsError, match=r"render_mode"):
        DriveEnv(render_mode="human")
