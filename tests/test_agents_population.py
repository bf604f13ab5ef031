"""The population learner (agents.population): every member's run is, bit for bit, the single agent's
run of its seed (one member or four), a frozen member stays as it was while the others go on, and the
shared step keeps clipping per member."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from agents import TD3, TD3Config
from agents.population import TD3Population
from agents.td3 import TD3Networks, backward_and_clip, backward_and_clip_members, make_optimizers

NETWORKS = ("actor", "critic", "actor_target", "critic_target")
REPORT_EVERY = 100


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def small_cfg(**overrides: Any) -> TD3Config:
    values: dict[str, Any] = dict(hidden_sizes=(32, 32), batch_size=32, buffer_size=5_000, learning_starts=200)
    return TD3Config(**(values | overrides))


class Member:
    """One env and its current observation, stepped by the agent given (a single agent or a member)."""

    def __init__(self, env_name: str, settings: dict[str, Any], seed: int) -> None:
        self.env = envs.make(env_name, settings)
        self.obs, _ = self.env.reset(seed=seed)

    def step(self, agent: TD3) -> None:
        action = agent.act(self.obs)
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        agent.observe(self.obs, action, float(reward), next_obs, terminated)
        self.obs = self.env.reset()[0] if terminated or truncated else next_obs


def single_run(env_name: str, settings: dict[str, Any], cfg: TD3Config, seed: int, steps: int) -> tuple[TD3, list[dict[str, float]]]:
    """The single agent's CleanRL loop (agents/agent.py): act, step, observe, update; its reports."""
    member = Member(env_name, settings, seed)
    agent = TD3(member.env.observation_space, member.env.action_space, cfg, device="cpu", seed=seed)
    reports = []
    for step in range(1, steps + 1):
        member.step(agent)
        reports.append(agent.update(diagnostics=step % REPORT_EVERY == 0))
    return agent, reports


def population_run(
    env_name: str, settings: dict[str, Any], cfg: TD3Config, seeds: list[int], steps: int
) -> tuple[TD3Population, dict[int, list[dict[str, float]]]]:
    """The same loop for a population: every member steps its own env, then all learn at once."""
    members = [Member(env_name, settings, seed) for seed in seeds]
    env = members[0].env
    population = TD3Population(env.observation_space, env.action_space, cfg, seeds, device="cpu")
    reports: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(seeds))}
    for step in range(1, steps + 1):
        for i in population.active:
            members[i].step(population.members[i])
        metrics = population.update(diagnostics=step % REPORT_EVERY == 0)
        for i in population.active:
            reports[i].append(metrics.get(i, {}))
    return population, reports


def assert_same_agent(single: TD3, member: TD3) -> float:
    """Every parameter, counter, random stream and the replay buffer equal; returns the largest
    parameter difference (0.0) for the report."""
    largest = 0.0
    for name in NETWORKS:
        for a, b in zip(getattr(single.nets, name).parameters(), getattr(member.nets, name).parameters(), strict=True):
            largest = max(largest, (a - b).abs().max().item())
            assert torch.equal(a, b), name
    assert (single.env_steps, single.updates) == (member.env_steps, member.updates)
    assert single._rng.bit_generator.state == member._rng.bit_generator.state
    assert torch.equal(single._generator.get_state(), member._generator.get_state())
    for field in ("obs", "action", "reward", "next_obs", "terminated"):  # Box observations: arrays
        assert np.array_equal(getattr(single.buffer, field), getattr(member.buffer, field)), field
    assert torch.equal(single._alert_counts, member._alert_counts)
    return largest


def assert_same_moments(single: TD3, population: TD3Population, i: int) -> None:
    """The population's Adam moments of member ``i``'s parameters are the single agent's."""
    state = {p: s for o in (population.optimizers.actor, population.optimizers.critic) for p, s in o.state.items()}
    for name in ("actor", "critic"):
        mine = getattr(population.members[i].nets, name).parameters()
        for own, p in zip(getattr(single.nets, name).parameters(), mine, strict=True):
            expected = getattr(single.optimizers, name).state[own]
            for key in ("step", "exp_avg", "exp_avg_sq"):
                assert torch.equal(expected[key], state[p][key]), (name, key)


@pytest.mark.parametrize(
    "overrides",
    [
        {"grad_clip_norm": 1.0, "critic_l2": 0.01},  # clipping binds (critic norms start above 1)
        {"critic_weight_decay": 0.1, "weight_decay_mode": "decoupled", "critic_layer_norm": True},
        {"target_policy_smoothing": False, "clipped_double_q": False, "policy_delay": 1, "reward_clip": 1.0},
    ],
    ids=["clip+l2", "adamw+layer_norm", "no_smoothing+clip_rewards"],
)
def test_one_member_reproduces_the_single_agent_run_bit_for_bit(overrides: dict[str, Any]) -> None:
    cfg = small_cfg(**overrides)
    single, expected = single_run("Pendulum-v1", {}, cfg, seed=3, steps=600)
    population, got = population_run("Pendulum-v1", {}, cfg, [3], steps=600)
    assert assert_same_agent(single, population.members[0]) == 0.0
    assert_same_moments(single, population, 0)
    assert sum(bool(r) for r in expected) == 5  # reports at steps 200 (learning starts), 300, ..., 600
    assert got[0] == expected  # every metric of every report


@pytest.mark.slow
def test_four_members_each_reproduce_their_single_agent_run_after_2000_steps_on_drive() -> None:
    """Bit for bit, not within a tolerance: each member's arithmetic is the single agent's (the shared
    step only batches the calls)."""
    settings = {"observation": "vector", "n_npcs": 5}
    cfg = small_cfg(hidden_sizes=(64, 64), batch_size=64, learning_starts=500, grad_clip_norm=5.0)
    seeds = [0, 1, 2, 3]
    population, got = population_run("drive", settings, cfg, seeds, steps=2_000)
    for i, seed in enumerate(seeds):
        single, expected = single_run("drive", settings, cfg, seed, steps=2_000)
        assert assert_same_agent(single, population.members[i]) == 0.0
        assert_same_moments(single, population, i)
        assert got[i] == expected


def test_members_differ_from_each_other() -> None:
    """The equivalence above is not a population of copies: seeds give members their own runs."""
    population, reports = population_run("Pendulum-v1", {}, small_cfg(), [0, 1], steps=300)
    a, b = (population.members[i].nets.critic.parameters() for i in (0, 1))
    assert not any(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert reports[0][-1]["train/critic_loss"] != reports[1][-1]["train/critic_loss"]


def test_a_frozen_member_keeps_its_parameters_while_the_others_go_on_exactly() -> None:
    cfg = small_cfg()
    seeds = [0, 1, 2]
    members = [Member("Pendulum-v1", {}, seed) for seed in seeds]
    env = members[0].env
    population = TD3Population(env.observation_space, env.action_space, cfg, seeds, device="cpu")
    for step in range(1, 501):
        if step == 301:
            population.freeze(1)
            frozen = {name: [p.clone() for p in getattr(population.members[1].nets, name).parameters()] for name in NETWORKS}
        for i in population.active:
            members[i].step(population.members[i])
        population.update()
    assert population.active == [0, 2]
    for name in NETWORKS:
        now = getattr(population.members[1].nets, name).parameters()
        assert all(torch.equal(a, b) for a, b in zip(frozen[name], now, strict=True)), name
    # Frozen where the single run of its seed stood at 300 steps; the others as their single runs at 500.
    assert_same_agent(single_run("Pendulum-v1", {}, cfg, 1, steps=300)[0], population.members[1])
    for i in (0, 2):
        single = single_run("Pendulum-v1", {}, cfg, seeds[i], steps=500)[0]
        assert_same_agent(single, population.members[i])
        assert_same_moments(single, population, i)
    with pytest.raises(ValueError, match="not learning"):
        population.freeze(1)


def test_a_saved_and_loaded_population_goes_on_as_the_uninterrupted_one(tmp_path: Path) -> None:
    """Saved at 400 steps with member 1 frozen at 300, loaded into a new population: at 600 every
    member (networks, counters, generators, buffer) and every shared moment is the uninterrupted run's."""
    cfg, seeds = small_cfg(), [0, 1, 2]

    def run(population: TD3Population, members: list[Member], steps: range) -> None:
        for step in steps:
            if step == 301:
                population.freeze(1)
            for i in population.active:
                members[i].step(population.members[i])
            population.update()

    def fresh() -> tuple[TD3Population, list[Member]]:
        members = [Member("Pendulum-v1", {}, seed) for seed in seeds]
        env = members[0].env
        return TD3Population(env.observation_space, env.action_space, cfg, seeds, device="cpu"), members

    whole, whole_envs = fresh()
    run(whole, whole_envs, range(1, 601))
    first, envs_ = fresh()
    run(first, envs_, range(1, 401))
    first.save(tmp_path, include_buffer=True)
    resumed, _ = fresh()
    resumed.load(tmp_path)
    run(resumed, envs_, range(401, 601))  # the envs went on where they were: the study replays its episodes
    assert resumed.active == whole.active == [0, 2]
    for i in range(len(seeds)):
        assert_same_agent(whole.members[i], resumed.members[i])
    for old, new in ((whole.optimizers.actor, resumed.optimizers.actor), (whole.optimizers.critic, resumed.optimizers.critic)):
        for a, b in zip(old.state_dict()["state"].values(), new.state_dict()["state"].values(), strict=True):
            assert all(torch.equal(a[key], b[key]) for key in ("step", "exp_avg", "exp_avg_sq"))
    with pytest.raises(ValueError, match="holds a population of seeds"):
        TD3Population(whole_envs[0].env.observation_space, whole_envs[0].env.action_space, cfg, [0, 1, 3], device="cpu").load(tmp_path)


def test_freezing_every_member_ends_learning() -> None:
    env = gym.make("Pendulum-v1")
    population = TD3Population(env.observation_space, env.action_space, small_cfg(learning_starts=0), [0, 1], device="cpu")
    for i in (0, 1):
        population.freeze(i)
    assert population.active == [] and population.update(diagnostics=True) == {}


def test_members_out_of_lockstep_are_refused() -> None:
    cfg = small_cfg(learning_starts=10, batch_size=8)
    env = gym.make("Pendulum-v1")
    population = TD3Population(env.observation_space, env.action_space, cfg, [0, 1], device="cpu")
    obs = env.observation_space.sample()
    for member in population.members:
        for _ in range(10):
            member.observe(obs, np.zeros(1, dtype=np.float32), -1.0, obs, False)
    assert set(population.update()) == {0, 1}
    population.members[0].observe(obs, np.zeros(1, dtype=np.float32), -1.0, obs, False)
    population.members[0].observe(obs, np.zeros(1, dtype=np.float32), -1.0, obs, False)
    with pytest.raises(RuntimeError, match="lockstep"):
        population.update()


def test_the_shared_backward_clips_each_network_by_its_own_norm() -> None:
    """Two networks whose losses differ in scale: clipping at a norm between theirs scales the large
    one's gradients only, exactly as ``backward_and_clip`` does for each alone."""
    space = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    cfg = small_cfg()
    obs = torch.rand(16, 3, generator=torch.Generator().manual_seed(0))

    def nets(seed: int) -> TD3Networks:
        torch.manual_seed(seed)
        return TD3Networks.build(space, 2, cfg, torch.device("cpu"))

    def loss(n: TD3Networks, scale: float) -> torch.Tensor:
        return scale * n.critic(obs, n.actor(obs)).pow(2).mean()

    alone = [nets(0), nets(1)]
    norms_alone = [
        backward_and_clip(loss(n, scale), make_optimizers(n, cfg).critic, n.critic_groups, max_norm=1.0)
        for n, scale in zip(alone, (1e-3, 1e3), strict=True)
    ]
    together = [nets(0), nets(1)]
    params = [p for n in together for p in n.critic.parameters()]
    optimizer = torch.optim.Adam(params)
    norms = backward_and_clip_members(
        [loss(n, s) for n, s in zip(together, (1e-3, 1e3), strict=True)], optimizer, [n.critic_groups for n in together], 1.0
    )
    assert norms_alone[0].norm() < 1.0 < norms_alone[1].norm()  # one clipped, one not
    for a, b, n_a, n_b in zip(alone, together, norms_alone, norms, strict=True):
        assert torch.equal(n_a, n_b)
        for p, q in zip(a.critic.parameters(), b.critic.parameters(), strict=True):
            assert p.grad is not None and q.grad is not None and torch.equal(p.grad, q.grad)
