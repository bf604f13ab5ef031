"""TD3's maths (agents.td3): the target's switches, the L2 penalty, decay modes and when they are one
treatment, clipping, delays."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.buffer import Batch
from agents.config import TD3Config
from agents.diagnostics import actor_metrics, critic_metrics
from agents.td3 import (
    TD3Networks,
    critic_l2_penalty,
    make_optimizers,
    regroup_critic_optimizer_state,
    smoothing_noise,
    soft_update_,
    td3_target,
    td3_update,
)

OBS_SPACE = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
ACTION_DIM = 2
B = 32


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def make_nets(cfg: TD3Config, seed: int = 0) -> TD3Networks:
    torch.manual_seed(seed)
    nets = TD3Networks.build(OBS_SPACE, ACTION_DIM, cfg, torch.device("cpu"))
    # Targets distinct from the online networks (as after training), and Q1' distinct from Q2'.
    with torch.no_grad():
        for p in [*nets.actor_target.parameters(), *nets.critic_target.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    return nets


def make_batch(seed: int = 1, reward_scale: float = 1.0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    terminated = (torch.rand(B, generator=g) < 0.25).float()
    return Batch(
        obs=torch.rand(B, 3, generator=g) * 2 - 1,
        action=torch.rand(B, ACTION_DIM, generator=g) * 2 - 1,
        reward=torch.randn(B, generator=g) * reward_scale,
        next_obs=torch.rand(B, 3, generator=g) * 2 - 1,
        terminated=terminated,
    )


def small_cfg(**overrides: object) -> TD3Config:
    return TD3Config(hidden_sizes=(32, 32), batch_size=B, buffer_size=1000, **overrides)  # type: ignore[arg-type]


def target_by_hand(nets: TD3Networks, batch: Batch, cfg: TD3Config, noise: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        a = nets.actor_target(batch.next_obs)
        if noise is not None:
            a = (a + noise.clamp(-cfg.noise_clip, cfg.noise_clip)).clamp(-1, 1)
        q1 = nets.critic_target.q[0](batch.next_obs, a)
        q2 = nets.critic_target.q[1](batch.next_obs, a)
        v = torch.minimum(q1, q2) if cfg.clipped_double_q else q1
        return batch.reward + cfg.gamma * (1 - batch.terminated) * v


@pytest.mark.parametrize("clipped_double_q", [True, False])
def test_target_without_smoothing_is_min_or_q1_of_the_target_action(clipped_double_q: bool) -> None:
    cfg = small_cfg(target_policy_smoothing=False, clipped_double_q=clipped_double_q)
    nets, batch = make_nets(cfg), make_batch()
    expected = target_by_hand(nets, batch, cfg, noise=None)
    other = target_by_hand(nets, batch, cfg.model_copy(update={"clipped_double_q": not clipped_double_q}), None)
    assert not torch.allclose(expected, other)  # the switch matters on this batch
    # No smoothing: nothing drawn, whatever the generator's state.
    generator = torch.Generator().manual_seed(0)
    assert smoothing_noise(batch, cfg, generator) is None
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state())
    got = td3_target(batch, nets.actor_target, nets.critic_target, cfg, None)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("clipped_double_q", [True, False])
def test_target_with_smoothing_adds_clipped_gaussian_noise(clipped_double_q: bool) -> None:
    cfg = small_cfg(policy_noise=0.5, noise_clip=0.3, clipped_double_q=clipped_double_q)
    nets, batch = make_nets(cfg), make_batch()
    noise = torch.randn(B, ACTION_DIM, generator=torch.Generator().manual_seed(7)) * cfg.policy_noise
    assert (noise.abs() > cfg.noise_clip).any()  # the clip is exercised
    drawn = smoothing_noise(batch, cfg, torch.Generator().manual_seed(7))
    got = td3_target(batch, nets.actor_target, nets.critic_target, cfg, drawn)
    torch.testing.assert_close(got, target_by_hand(nets, batch, cfg, noise))
    assert not torch.allclose(got, target_by_hand(nets, batch, cfg, None))


def test_terminal_transitions_do_not_bootstrap() -> None:
    cfg = small_cfg()
    nets, batch = make_nets(cfg), make_batch()
    y = td3_target(batch, nets.actor_target, nets.critic_target, cfg, smoothing_noise(batch, cfg, torch.Generator()))
    done = batch.terminated.bool()
    assert done.any() and (~done).any()
    torch.testing.assert_close(y[done], batch.reward[done])
    assert not torch.allclose(y[~done], batch.reward[~done])


def test_reward_clipping_acts_inside_the_target_only() -> None:
    cfg = small_cfg(reward_clip=0.5, target_policy_smoothing=False)
    nets, batch = make_nets(cfg), make_batch(reward_scale=3.0)
    assert (batch.reward.abs() > 0.5).any()
    y = td3_target(batch, nets.actor_target, nets.critic_target, cfg, None)
    unclipped = target_by_hand(nets, batch, cfg, None)
    clipped = Batch(batch.obs, batch.action, batch.reward.clamp(-0.5, 0.5), batch.next_obs, batch.terminated)
    torch.testing.assert_close(y, target_by_hand(nets, clipped, cfg, None))
    assert not torch.allclose(y, unclipped)
    # The update's logged rewards are the raw ones.
    opts = make_optimizers(nets, cfg)
    critic, _ = td3_update(batch, nets, opts, cfg, torch.Generator(), update_actor=False)
    logged = critic_metrics(critic, batch.reward, batch.terminated, cfg.gamma)
    assert logged["debug/reward_max"] == batch.reward.max() > 0.5
    assert logged["debug/reward_min"] == batch.reward.min() < -0.5


def test_critic_l2_penalty_is_coeff_times_sum_of_squared_weights_without_biases() -> None:
    nets = make_nets(small_cfg())
    weights = [p for name, p in nets.critic.named_parameters() if name.endswith("weight")]
    assert len(weights) == 6  # 3 layers x 2 critics; biases are left out
    expected = 0.01 * sum(float((w.detach().double() ** 2).sum()) for w in weights)
    assert float(critic_l2_penalty(nets.critic, 0.01).detach()) == pytest.approx(expected, rel=1e-5)


def test_critic_l2_adds_exactly_the_penalty_to_the_critic_loss() -> None:
    batch = make_batch()
    losses = {}
    for coeff in (0.0, 0.01):
        cfg = small_cfg(critic_l2=coeff)
        nets = make_nets(cfg)
        penalty = float(critic_l2_penalty(nets.critic, 0.01).detach())
        critic, _ = td3_update(batch, nets, make_optimizers(nets, cfg), cfg, torch.Generator().manual_seed(3), False)
        losses[coeff] = float(critic.loss)
    assert losses[0.01] - losses[0.0] == pytest.approx(penalty, rel=1e-4)


@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
def test_weight_decay_modes_follow_adam_and_adamw(mode: str) -> None:
    """One step from zero moments: Adam's update is lr * g / (|g| + eps) elementwise (bias-corrected)."""
    lr, decay, eps = 1e-2, 0.1, 1e-8
    cfg = small_cfg(lr_critic=lr, critic_weight_decay=decay, weight_decay_mode=mode)
    nets = make_nets(cfg)
    opt = make_optimizers(nets, cfg).critic
    params = list(nets.critic.parameters())
    before = [p.detach().clone() for p in params]
    grads = [torch.randn_like(p) for p in params]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    opt.step()
    for p, w, g in zip(params, before, grads, strict=True):
        wd = decay if p.ndim > 1 else 0.0  # weight matrices only: biases are not decayed
        if mode == "coupled":  # decay joins the gradient, then Adam normalizes it away
            g_eff = g + wd * w
            expected = w - lr * g_eff / (g_eff.abs() + eps)
        else:  # decay shrinks the weight directly, outside Adam's normalization
            expected = w * (1 - lr * wd) - lr * g / (g.abs() + eps)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)


L2 = 0.01  # critic_l2 = c; the coupled decay it should match is 2c (the gradient of c w^2 is 2c w)
SAME = 1e-6  # float32 rounding over 20 Adam steps; measured 3e-8


def critic_after_20_updates(cfg: TD3Config) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic's parameters (flat) after 20 updates on fixed batches from fixed initial networks
    and target noise, and the 20 critic gradient norms before clipping."""
    nets = make_nets(cfg)
    opts = make_optimizers(nets, cfg)
    generator, norms = torch.Generator().manual_seed(0), []
    for i in range(20):
        critic, _ = td3_update(make_batch(seed=i), nets, opts, cfg, generator, update_actor=i % 2 == 1)
        norms.append(critic.grad_norms.norm())
    return torch.cat([p.detach().flatten() for p in nets.critic.parameters()]), torch.stack(norms)


def test_without_clipping_critic_l2_is_coupled_decay_of_twice_it() -> None:
    """d/dw (c w^2) = 2c w joins the TD gradient before Adam, as coupled decay's 2c w does, on the
    same weights (biases and LayerNorm gains neither penalized nor decayed)."""
    penalized, _ = critic_after_20_updates(small_cfg(critic_l2=L2))
    decayed, _ = critic_after_20_updates(small_cfg(critic_weight_decay=2 * L2, weight_decay_mode="coupled"))
    unregularized, _ = critic_after_20_updates(small_cfg())
    assert float((penalized - decayed).abs().max()) < SAME
    assert float((penalized - unregularized).abs().max()) > 100 * SAME  # the penalty did act


def test_with_clipping_that_binds_critic_l2_and_coupled_decay_differ() -> None:
    """The L2 term's gradient is clipped with the TD gradient; coupled decay joins after clipping."""
    clip = 0.1
    penalized, norms_l2 = critic_after_20_updates(small_cfg(critic_l2=L2, grad_clip_norm=clip))
    decayed, norms_decay = critic_after_20_updates(
        small_cfg(critic_weight_decay=2 * L2, weight_decay_mode="coupled", grad_clip_norm=clip)
    )
    assert bool((norms_l2 > clip).all() and (norms_decay > clip).all())  # clipping binds at every step
    assert float((penalized - decayed).abs().max()) > 100 * SAME


def test_a_critic_optimizer_saved_with_one_group_keeps_each_parameters_moments() -> None:
    """Checkpoints from before the decay spared biases hold one group: regrouped, every parameter
    finds its own Adam moments again."""
    cfg = small_cfg(critic_weight_decay=0.01)
    nets = make_nets(cfg)
    legacy = torch.optim.Adam(nets.critic.parameters(), lr=cfg.lr_critic, weight_decay=0.01)
    for p in nets.critic.parameters():
        p.grad = torch.randn_like(p)
    legacy.step()
    optimizer = make_optimizers(nets, cfg).critic
    optimizer.load_state_dict(regroup_critic_optimizer_state(legacy.state_dict(), nets.critic))
    for p in nets.critic.parameters():
        torch.testing.assert_close(optimizer.state[p]["exp_avg"], legacy.state[p]["exp_avg"])
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]


def test_gradient_norms_are_reported_before_clipping() -> None:
    batch = make_batch(reward_scale=10.0)
    steps, params = {}, {}
    for clip in (None, 1e-3):
        cfg = small_cfg(grad_clip_norm=clip, policy_delay=1)
        nets = make_nets(cfg)
        steps[clip] = td3_update(batch, nets, make_optimizers(nets, cfg), cfg, torch.Generator().manual_seed(0), True)
        params[clip] = torch.cat([p.detach().flatten() for p in nets.critic.parameters()])
        if clip is not None:  # the gradients Adam saw were clipped to the limit
            clipped = torch.nn.utils.get_total_norm([p.grad for p in nets.critic.parameters() if p.grad is not None])
            assert float(clipped) == pytest.approx(clip, rel=1e-3)
    (c0, a0), (c1, a1) = steps[None], steps[1e-3]
    assert a0 is not None and a1 is not None
    torch.testing.assert_close(c0.grad_norms, c1.grad_norms)
    torch.testing.assert_close(a0.grad_norms, a1.grad_norms)
    assert float(c1.grad_norms[1]) > 1.0 and float(c1.grad_norms[0]) == 0.0  # no CNN: cnn norm 0
    assert not torch.allclose(params[None], params[1e-3])


def test_actor_q_is_on_actor_actions_and_q1_value_on_buffer_actions() -> None:
    cfg = small_cfg(policy_delay=1)
    nets, batch = make_nets(cfg), make_batch()
    actor_before = copy.deepcopy(nets.actor)
    with torch.no_grad():
        q_buffer = nets.critic.q1(batch.obs, batch.action)
    critic, actor = td3_update(batch, nets, make_optimizers(nets, cfg), cfg, torch.Generator(), update_actor=True)
    assert actor is not None
    with torch.no_grad():  # the actor step climbs the critic as just updated
        actor_action = actor_before(batch.obs)
        q_actor = nets.critic.q1(batch.obs, actor_action)
    torch.testing.assert_close(critic.q[0], q_buffer)
    torch.testing.assert_close(actor.q, q_actor)
    c_metrics, a_metrics = critic_metrics(critic, batch.reward, batch.terminated, cfg.gamma), actor_metrics(actor)
    torch.testing.assert_close(c_metrics["train/q1_value"], q_buffer.mean())
    torch.testing.assert_close(a_metrics["debug/actor_q_mean"], q_actor.mean())
    torch.testing.assert_close(a_metrics["debug/actor_q_max"], q_actor.max())
    gap = (actor_action - batch.action).norm(dim=1).mean()
    torch.testing.assert_close(a_metrics["debug/action_gap"], gap)
    assert abs(float(q_buffer.mean() - q_actor.mean())) > 1e-4


def test_actor_step_leaves_critic_gradients_and_weights_alone() -> None:
    cfg = small_cfg(policy_delay=1)
    nets = make_nets(cfg)
    opts = make_optimizers(nets, cfg)
    seen = {}
    original_step = opts.critic.step

    def record_step() -> None:  # the critic's gradients as its optimizer consumed them
        seen["grads"] = [p.grad.clone() for p in nets.critic.parameters()]  # type: ignore[union-attr]
        original_step()
        seen["weights"] = [p.detach().clone() for p in nets.critic.parameters()]

    opts.critic.step = record_step  # type: ignore[method-assign, assignment]
    td3_update(make_batch(), nets, opts, cfg, torch.Generator(), update_actor=True)
    for p, g, w in zip(nets.critic.parameters(), seen["grads"], seen["weights"], strict=True):
        assert p.grad is not None and torch.equal(p.grad, g)  # no dQ/dw accumulated by the actor step
        assert torch.equal(p.detach(), w)


def test_delayed_actor_and_targets_move_only_on_actor_steps() -> None:
    cfg = small_cfg(tau=0.1)
    nets = make_nets(cfg)
    opts = make_optimizers(nets, cfg)

    def snapshot() -> dict[str, torch.Tensor]:
        return {
            name: torch.cat([p.detach().flatten() for p in getattr(nets, name).parameters()])
            for name in ("actor", "critic", "actor_target", "critic_target")
        }

    before = snapshot()
    _, actor = td3_update(make_batch(), nets, opts, cfg, torch.Generator(), update_actor=False)
    after = snapshot()
    assert actor is None
    assert not torch.equal(before["critic"], after["critic"])
    for name in ("actor", "actor_target", "critic_target"):
        assert torch.equal(before[name], after[name])
    td3_update(make_batch(2), nets, opts, cfg, torch.Generator(), update_actor=True)
    final = snapshot()
    assert not torch.equal(after["actor"], final["actor"])
    for online, target in (("actor", "actor_target"), ("critic", "critic_target")):
        torch.testing.assert_close(final[target], 0.1 * final[online] + 0.9 * after[target])


def test_soft_update_with_tau_one_copies() -> None:
    nets = make_nets(small_cfg())
    assert len(nets.target_params) == len(nets.online_params) == 6 + 12
    soft_update_(nets.target_params, nets.online_params, 1.0)
    for net in ("actor", "critic"):
        for p, t in zip(getattr(nets, net).parameters(), getattr(nets, f"{net}_target").parameters(), strict=True):
            assert torch.equal(p, t)
