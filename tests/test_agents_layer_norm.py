"""critic_layer_norm: where the norms sit, that targets copy and follow them, that they train and
count in the gradient norms, that L2 leaves them out, and that the default critic is TD3's."""

from __future__ import annotations

from itertools import pairwise
from typing import cast

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from agents.buffer import Batch
from agents.config import TD3Config
from agents.networks import Linear, QNetwork, TwinCritic
from agents.td3 import TD3Networks, critic_l2_penalty, make_optimizers, td3_update

OBS_SPACE = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
ACTION_DIM = 2
HIDDEN = (16, 24)
B = 8


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def small_cfg(**overrides: object) -> TD3Config:
    return TD3Config(hidden_sizes=HIDDEN, batch_size=B, buffer_size=100, **overrides)  # type: ignore[arg-type]


def build(cfg: TD3Config) -> TD3Networks:
    torch.manual_seed(0)
    return TD3Networks.build(OBS_SPACE, ACTION_DIM, cfg, torch.device("cpu"))


def layer_norms(module: nn.Module) -> list[nn.LayerNorm]:
    return [m for m in module.modules() if isinstance(m, nn.LayerNorm)]


def norm_params(critic: TwinCritic) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for m in layer_norms(critic) for p in m.parameters()])


def random_batch() -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(
        obs=torch.rand(B, 3, generator=g) * 2 - 1,
        action=torch.rand(B, ACTION_DIM, generator=g) * 2 - 1,
        reward=torch.randn(B, generator=g),
        next_obs=torch.rand(B, 3, generator=g) * 2 - 1,
        terminated=torch.zeros(B),
    )


def test_layer_norm_critic_keeps_the_output_shapes() -> None:
    critic = TwinCritic(OBS_SPACE, ACTION_DIM, HIDDEN, cnn_features=8, layer_norm=True)
    obs, action = torch.randn(B, 3), torch.rand(B, ACTION_DIM) * 2 - 1
    with torch.no_grad():
        q, q1 = critic(obs, action), critic.q1(obs, action)
    assert q.shape == (2, B) and q1.shape == (B,)
    torch.testing.assert_close(q1, q[0])


def test_a_layer_norm_follows_each_hidden_linear_layer_before_the_relu_and_none_the_output() -> None:
    nets = build(small_cfg(critic_layer_norm=True))
    x = torch.randn(B, 3 + ACTION_DIM)
    for q in nets.critic.q:
        mlp = cast(QNetwork, q).mlp
        assert [norm.normalized_shape for norm in mlp.norms] == [(n,) for n in HIDDEN]
        assert all(norm.elementwise_affine for norm in mlp.norms)
        with torch.no_grad():  # the norm's gains and biases off their 1 and 0, so that they matter
            for p in mlp.norms.parameters():
                p.add_(0.5 * torch.randn_like(p))
        *hidden, last = (cast(Linear, layer) for layer in mlp.layers)
        h = x
        for layer, norm in zip(hidden, mlp.norms, strict=True):
            h = torch.relu(norm(h @ layer.weight + layer.bias))
        by_hand = h @ last.weight + last.bias  # no norm after the output layer
        with torch.no_grad():
            torch.testing.assert_close(mlp(x), by_hand)
    assert layer_norms(nets.actor) == []  # the actor is TD3's as published


def test_critic_targets_copy_the_layer_norms_and_follow_them_under_soft_update() -> None:
    cfg = small_cfg(critic_layer_norm=True, tau=0.1)
    nets = build(cfg)
    initial = norm_params(nets.critic)
    assert len(layer_norms(nets.critic_target)) == 2 * len(HIDDEN)
    assert torch.equal(norm_params(nets.critic_target), initial)
    td3_update(random_batch(), nets, make_optimizers(nets, cfg), cfg, torch.Generator(), update_actor=True)
    trained = norm_params(nets.critic)
    assert not torch.equal(trained, initial)  # the critic's optimizer trains the norms
    torch.testing.assert_close(norm_params(nets.critic_target), 0.1 * trained + 0.9 * initial)


def test_layer_norm_gradients_count_in_the_critics_gradient_norm() -> None:
    cfg = small_cfg(critic_layer_norm=True)
    nets = build(cfg)
    critic, _ = td3_update(random_batch(), nets, make_optimizers(nets, cfg), cfg, torch.Generator(), False)
    norm_grads = [p.grad for m in layer_norms(nets.critic) for p in m.parameters()]
    assert all(g is not None and bool(g.abs().sum() > 0) for g in norm_grads)
    every_grad = [p.grad for p in nets.critic.parameters() if p.grad is not None]
    torch.testing.assert_close(critic.grad_norms.norm(), torch.nn.utils.get_total_norm(every_grad))


def test_the_critic_l2_penalty_leaves_the_layer_norm_gains_out() -> None:
    """Its ``ndim > 1`` test: LayerNorm's gains and biases are 1-D, like the linear layers' biases."""
    critic = build(small_cfg(critic_layer_norm=True)).critic
    matrices = [m.weight for m in critic.modules() if isinstance(m, Linear)]
    assert len(matrices) == 2 * (len(HIDDEN) + 1)
    expected = 0.01 * sum(float((w.detach().double() ** 2).sum()) for w in matrices)
    assert float(critic_l2_penalty(critic, 0.01).detach()) == pytest.approx(expected, rel=1e-5)


def test_the_default_critic_has_no_layer_norm_and_its_published_parameter_count() -> None:
    plain, normed = build(small_cfg()), build(small_cfg(critic_layer_norm=True))
    assert layer_norms(plain.critic) == [] and layer_norms(plain.critic_target) == []
    sizes = [3 + ACTION_DIM, *HIDDEN, 1]
    linear = sum(a * b + b for a, b in pairwise(sizes))
    count = sum(p.numel() for p in plain.critic.parameters())
    assert count == 2 * linear
    assert sum(p.numel() for p in normed.critic.parameters()) == count + 2 * 2 * sum(HIDDEN)  # gain, bias
    assert all("norms" not in key for key in plain.critic.state_dict())  # checkpoints as before

