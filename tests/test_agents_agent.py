"""The TD3 agent's API: acting, storing, updating, diagnostics, checkpoints, Dict/image observations."""

from __future__ import annotations

import math
from pathlib import Path
from typing import cast

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents import TD3, TD3Config
from agents.networks import QNetwork

# DESIGN.md's agent-side metric names: the contract with TensorBoard, Ray Tune and MLflow.
AGENT_METRICS = {
    "train/actor_loss", "train/critic_loss", "train/q1_value", "train/q2_value",
    "debug/q1_max", "debug/q1_min", "debug/q1_std", "debug/q2_max", "debug/q2_min", "debug/q2_std",
    "debug/target_q_mean", "debug/target_q_max", "debug/target_q_min", "debug/target_q_std",
    "debug/td_error_q1", "debug/td_error_q2",
    "debug/actor_q_mean", "debug/actor_q_max", "debug/actor_q_min", "debug/actor_q_std",
    "debug/reward_mean", "debug/reward_max", "debug/reward_min", "debug/reward_std",
    "debug/done_ratio", "debug/effective_discount",
    "gradients/actor_cnn_norm", "gradients/actor_mlp_norm", "gradients/critic_cnn_norm", "gradients/critic_mlp_norm",
    "alerts/gradient_explosion_warning", "alerts/gradient_explosion_critical",
    "debug/action_gap", "debug/actor_saturation",
}  # fmt: skip

OBS_SPACE = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
ACTION_SPACE = gym.spaces.Box(np.array([-2.0, 0.0], dtype=np.float32), np.array([2.0, 1.0], dtype=np.float32))
DICT_SPACE = gym.spaces.Dict(
    {
        "image": gym.spaces.Box(0, 255, shape=(3, 32, 40), dtype=np.uint8),
        "speed": gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
    }
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def small_cfg(**overrides: object) -> TD3Config:
    values: dict[str, object] = dict(hidden_sizes=(32, 32), batch_size=16, buffer_size=500, learning_starts=20)
    return TD3Config(**(values | overrides))  # type: ignore[arg-type]


class Feeder:
    """A deterministic stream of transitions that depends only on its seed and the agent's actions."""

    def __init__(self, space: gym.Space, seed: int) -> None:
        self.space = space
        self.space.seed(seed)
        self.rng = np.random.default_rng(seed)
        self.obs = space.sample()

    def step(self, agent: TD3, diagnostics: bool = False) -> dict[str, float]:
        action = agent.act(self.obs)
        next_obs = self.space.sample()
        reward = float(self.rng.normal(0.0, 5.0) - np.sum(action))
        agent.observe(self.obs, action, reward, next_obs, bool(self.rng.random() < 0.05))
        self.obs = next_obs
        return agent.update(diagnostics=diagnostics)


def run(agent: TD3, feeder: Feeder, steps: int) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for i in range(steps):
        metrics = feeder.step(agent, diagnostics=i == steps - 1) or metrics
    return metrics


def test_warm_up_actions_are_uniform_in_bounds_from_the_agents_seed() -> None:
    actions = {}
    for seed, global_seed in ((0, 1), (0, 2), (1, 1)):
        torch.manual_seed(global_seed)
        np.random.seed(global_seed)
        agent = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(learning_starts=200), device="cpu", seed=seed)
        actions[seed, global_seed] = np.stack([agent.act(OBS_SPACE.sample()) for _ in range(200)])
    batch = actions[0, 1]
    assert np.array_equal(batch, actions[0, 2])  # global seeds play no part
    assert not np.array_equal(batch, actions[1, 1])
    assert batch.dtype == np.float32
    assert (batch >= ACTION_SPACE.low).all() and (batch <= ACTION_SPACE.high).all()
    # Uniform over each dimension's whole range, not the actor's (tanh) output near the centre.
    assert batch[:, 0].min() < -1.5 and batch[:, 0].max() > 1.5
    assert batch[:, 1].min() < 0.2 and batch[:, 1].max() > 0.8


def test_acting_after_warm_up_explores_around_the_deterministic_actor() -> None:
    agent = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(learning_starts=0, exploration_noise=0.1), device="cpu")
    obs = OBS_SPACE.sample()
    greedy = agent.act(obs, explore=False)
    assert np.array_equal(greedy, agent.act(obs, explore=False))
    noisy = np.stack([agent.act(obs) for _ in range(300)])
    assert (noisy >= ACTION_SPACE.low).all() and (noisy <= ACTION_SPACE.high).all()
    half_range = (ACTION_SPACE.high - ACTION_SPACE.low) / 2
    std = noisy.std(axis=0) / half_range  # in normalized units
    assert np.all((std > 0.07) & (std < 0.13))


def test_observe_counts_steps_and_tracks_the_raw_reward_range() -> None:
    agent = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(), device="cpu")
    assert agent.reward_range_seen is None
    for reward in (3.0, -7.5, 1.0):
        agent.observe(OBS_SPACE.sample(), ACTION_SPACE.sample(), reward, OBS_SPACE.sample(), False)
    assert agent.env_steps == 3
    assert agent.reward_range_seen == (-7.5, 3.0)


def test_update_is_a_no_op_before_learning_starts_and_a_full_batch() -> None:
    agent = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(learning_starts=10, batch_size=16), device="cpu")
    feeder = Feeder(OBS_SPACE, 0)
    for _ in range(15):  # learning_starts reached at 10, but only 15 < 16 transitions stored
        assert feeder.step(agent, diagnostics=True) == {}
    assert agent.updates == 0
    feeder.step(agent)
    assert agent.updates == 1


def test_diagnostics_report_every_metric_finite_and_nothing_without_asking() -> None:
    agent = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(), device="cpu")
    feeder = Feeder(OBS_SPACE, 0)
    metrics = run(agent, feeder, 40)
    assert set(metrics) == AGENT_METRICS
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["gradients/critic_cnn_norm"] == metrics["gradients/actor_cnn_norm"] == 0.0  # no CNN
    assert metrics["gradients/critic_mlp_norm"] > 0 and metrics["gradients/actor_mlp_norm"] > 0
    assert metrics["debug/effective_discount"] == pytest.approx(0.99 * (1 - metrics["debug/done_ratio"]))
    assert 0.0 <= metrics["debug/actor_saturation"] <= 1.0
    assert feeder.step(agent, diagnostics=False) == {}


def test_actor_path_metrics_are_absent_before_the_first_actor_step_then_kept() -> None:
    agent = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(learning_starts=16, policy_delay=2), device="cpu")
    feeder = Feeder(OBS_SPACE, 0)
    run(agent, feeder, 15)
    first = feeder.step(agent, diagnostics=True)  # update 1: critic only
    assert agent.updates == 1 and math.isfinite(first["debug/q1_max"])
    assert not agent.has_actor_step and "debug/actor_q_max" not in first and "train/actor_loss" not in first
    feeder.step(agent)  # update 2: the actor steps
    third = feeder.step(agent, diagnostics=True)  # update 3: critic only, actor metrics from update 2
    assert agent.has_actor_step
    assert math.isfinite(third["debug/actor_q_max"]) and math.isfinite(third["train/actor_loss"])


def test_gradient_explosion_alerts_count_updates_over_the_thresholds() -> None:
    cfg = small_cfg(grad_norm_warning=1e-9, grad_norm_critical=1e9)
    agent = TD3(OBS_SPACE, ACTION_SPACE, cfg, device="cpu")
    metrics = run(agent, Feeder(OBS_SPACE, 0), 40)
    assert agent.updates == 40 - 20 + 1
    assert metrics["alerts/gradient_explosion_warning"] == agent.updates
    assert metrics["alerts/gradient_explosion_critical"] == 0


def test_nan_gradient_norms_count_as_gradient_explosion_alerts() -> None:
    """A NaN reward makes the critic's loss and gradients NaN; ``NaN > threshold`` alone is False."""
    agent = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(learning_starts=0, batch_size=4, buffer_size=4), device="cpu")
    feeder = Feeder(OBS_SPACE, 0)
    for _ in range(4):
        obs = feeder.space.sample()
        agent.observe(obs, agent.act(obs), math.nan, feeder.space.sample(), False)
    metrics = agent.update(diagnostics=True)
    assert math.isnan(metrics["gradients/critic_mlp_norm"])
    assert metrics["alerts/gradient_explosion_warning"] == 1 and metrics["alerts/gradient_explosion_critical"] == 1


def test_reward_clipping_changes_the_targets_but_not_the_logged_rewards() -> None:
    results = []
    for clip in (None, 0.5):
        agent = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(reward_clip=clip), device="cpu", seed=3)
        results.append(run(agent, Feeder(OBS_SPACE, 0), 20))  # the first update: identical networks
    raw, clipped = results
    for key in ("debug/reward_mean", "debug/reward_max", "debug/reward_min", "debug/reward_std"):
        assert raw[key] == clipped[key]
    assert raw["debug/reward_max"] > 0.5 and raw["debug/reward_min"] < -0.5
    assert raw["debug/target_q_max"] > 0.5 + 1.0 >= clipped["debug/target_q_max"]  # |Q'| < 1 at init


@pytest.mark.parametrize("critic_layer_norm", [False, True])
def test_checkpoint_round_trip_continues_identically(tmp_path: Path, critic_layer_norm: bool) -> None:
    cfg = small_cfg(critic_layer_norm=critic_layer_norm)
    original = TD3(OBS_SPACE, ACTION_SPACE, cfg, device="cpu", seed=5)
    feeder = Feeder(OBS_SPACE, 0)
    run(original, feeder, 40)
    original.save(tmp_path / "ckpt", include_buffer=True)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["agent.pt", "buffer.npz"]
    state = (feeder.obs.copy(), feeder.rng.bit_generator.state, feeder.space.np_random.bit_generator.state)
    run(original, feeder, 25)

    resumed = TD3(OBS_SPACE, ACTION_SPACE, cfg, device="cpu", seed=123)  # another seed: all state is loaded
    resumed.load(tmp_path / "ckpt")
    assert (resumed.env_steps, resumed.updates) == (40, 40 - 20 + 1)
    feeder.obs, feeder.rng.bit_generator.state, feeder.space.np_random.bit_generator.state = state
    run(resumed, feeder, 25)

    assert (resumed.env_steps, resumed.updates) == (original.env_steps, original.updates)
    assert resumed.reward_range_seen == original.reward_range_seen
    for name in ("actor", "critic", "actor_target", "critic_target"):
        for a, b in zip(getattr(original.nets, name).parameters(), getattr(resumed.nets, name).parameters()):
            assert torch.equal(a, b), name
    obs = OBS_SPACE.sample()
    assert np.array_equal(original.act(obs), resumed.act(obs))  # same exploration RNG state
    state_a = original.optimizers.critic.state_dict()["state"]
    state_b = resumed.optimizers.critic.state_dict()["state"]
    assert all(torch.equal(state_a[k]["exp_avg_sq"], state_b[k]["exp_avg_sq"]) for k in state_a)


def test_checkpoint_keeps_the_last_actor_steps_diagnostics(tmp_path: Path) -> None:
    """A report right after a resume reads the same actor-path metrics as the uninterrupted run's."""
    agent = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(policy_delay=2), device="cpu", seed=5)
    feeder = Feeder(OBS_SPACE, 0)
    run(agent, feeder, 21)  # updates 1 and 2: the actor stepped at update 2
    agent.save(tmp_path, include_buffer=True)
    resumed = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(policy_delay=2), device="cpu", seed=5)
    resumed.load(tmp_path)
    state = (feeder.obs.copy(), feeder.rng.bit_generator.state, feeder.space.np_random.bit_generator.state)
    original = feeder.step(agent, diagnostics=True)  # update 3, critic only: actor metrics of update 2
    feeder.obs, feeder.rng.bit_generator.state, feeder.space.np_random.bit_generator.state = state
    again = feeder.step(resumed, diagnostics=True)
    assert resumed.has_actor_step
    assert original == again


def test_a_checkpoint_from_another_device_type_loads_with_a_reseeded_generator(tmp_path: Path) -> None:
    """A CUDA generator's state (16 bytes of Philox seed and offset) cannot be set on a CPU one."""
    agent = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(), device="cpu", seed=5)
    run(agent, Feeder(OBS_SPACE, 0), 21)
    agent.save(tmp_path)
    state = torch.load(tmp_path / "agent.pt", weights_only=True)
    state["torch_rng"], state["torch_rng_device"] = torch.arange(16, dtype=torch.uint8), "cuda"
    torch.save(state, tmp_path / "agent.pt")
    draws = []
    for _ in range(2):
        loaded = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(), device="cpu", seed=5)
        loaded.load(tmp_path)
        draws.append(torch.randn(4, generator=loaded._generator))
    assert torch.equal(draws[0], draws[1])  # reseeded from the saved state: deterministic
    fresh = torch.randn(4, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(draws[0], fresh)


def test_checkpoint_without_buffer_drops_a_stale_one_and_refuses_another_config(tmp_path: Path) -> None:
    agent = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(), device="cpu")
    run(agent, Feeder(OBS_SPACE, 0), 20)
    agent.save(tmp_path, include_buffer=True)
    agent.save(tmp_path)
    assert not (tmp_path / "buffer.npz").exists()
    fresh = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(), device="cpu")
    fresh.load(tmp_path)
    assert len(fresh.buffer) == 0 and fresh.env_steps == 20
    other = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(tau=0.01), device="cpu")
    with pytest.raises(ValueError, match=r"tau=0.005 \(checkpoint\) vs 0.01"):
        other.load(tmp_path)


def test_checkpoint_loads_without_unpickling_objects(tmp_path: Path) -> None:
    agent = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(), device="cpu")
    run(agent, Feeder(OBS_SPACE, 0), 20)
    agent.save(tmp_path, include_buffer=True)
    torch.load(tmp_path / "agent.pt", weights_only=True)  # raises on anything but tensors and plain data
    with np.load(tmp_path / "buffer.npz", allow_pickle=False) as data:
        assert data["obs"].shape == (20, 3) and data["action"].dtype == np.float32


def test_construction_leaves_global_rngs_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    TD3(OBS_SPACE, ACTION_SPACE, small_cfg(), device="cpu", seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_device_auto_picks_cuda_only_when_present() -> None:
    agent = TD3(OBS_SPACE, ACTION_SPACE, small_cfg(), device="auto")
    assert agent.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert next(agent.nets.actor.parameters()).device.type == agent.device.type


def test_dict_observations_with_an_image_train_through_a_cnn(tmp_path: Path) -> None:
    agent = TD3(DICT_SPACE, ACTION_SPACE, small_cfg(cnn_features=16, policy_delay=1), device="cpu")
    assert agent.buffer.obs["image"].dtype == np.uint8  # type: ignore[index]
    feeder = Feeder(DICT_SPACE, 0)
    metrics = run(agent, feeder, 20)
    assert set(metrics) == AGENT_METRICS and all(math.isfinite(v) for v in metrics.values())
    assert metrics["gradients/critic_cnn_norm"] > 0 and metrics["gradients/actor_cnn_norm"] > 0
    assert ACTION_SPACE.contains(agent.act(feeder.obs, explore=False))
    agent.save(tmp_path, include_buffer=True)
    with np.load(tmp_path / "buffer.npz", allow_pickle=False) as data:
        assert data["obs.image"].dtype == np.uint8 and data["next_obs.speed"].shape == (20, 2)


def test_each_network_has_its_own_image_encoder() -> None:
    agent = TD3(DICT_SPACE, ACTION_SPACE, small_cfg(cnn_features=16), device="cpu")
    encoders = [agent.nets.actor.encoder.cnn, *(cast(QNetwork, q).encoder.cnn for q in agent.nets.critic.q)]
    assert len({id(e) for e in encoders}) == 3 and all(e is not None for e in encoders)
    assert sum(len(group) for group in agent.nets.critic_groups) == len(list(agent.nets.critic.parameters()))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (gym.spaces.Box(0, 255, shape=(3, 16, 16), dtype=np.uint8), "H, W >= 32"),
        (gym.spaces.Box(0, 255, shape=(64, 64, 3), dtype=np.uint8), "channels first"),
        (gym.spaces.Box(0.0, 1.0, shape=(3, 64, 64), dtype=np.float32), "uint8"),
    ],
)
def test_bad_image_spaces_are_refused_with_what_an_image_must_be(image: gym.Space, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TD3(gym.spaces.Dict({"image": image}), ACTION_SPACE, small_cfg(), device="cpu")


@pytest.mark.parametrize(
    "space",
    [gym.spaces.Discrete(3), gym.spaces.Box(-np.inf, np.inf, shape=(2,)), gym.spaces.Box(-1, 1, shape=(2, 2))],
)
def test_unbounded_or_discrete_action_spaces_are_refused(space: gym.Space) -> None:
    with pytest.raises(ValueError, match="1-D Box action space with finite bounds"):
        TD3(OBS_SPACE, space, small_cfg(), device="cpu")
