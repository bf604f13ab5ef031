"""Networks: row-major Linear, the image encoder's size adaptation, parameter groups, actor range."""

from __future__ import annotations

import math
from typing import cast

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.networks import CNN, Actor, Linear, ObsEncoder, QNetwork, TwinCritic, cnn_and_mlp_parameters


def test_linear_computes_x_w_plus_b_with_nn_linear_init_bounds() -> None:
    torch.manual_seed(0)
    layer = Linear(64, 8)
    assert layer.weight.shape == (64, 8)
    bound, largest = 1 / math.sqrt(64), float(layer.weight.detach().abs().max())
    assert 0.9 * bound < largest <= bound
    x = torch.randn(5, 64)
    torch.testing.assert_close(layer(x), x @ layer.weight + layer.bias)


@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 64, 64), (1, 84, 96)])
def test_cnn_adapts_to_the_image_size(shape: tuple[int, int, int]) -> None:
    cnn = CNN(shape, features=24)
    out = cnn(torch.randint(0, 256, (2, *shape), dtype=torch.uint8))
    assert out.shape == (2, 24) and bool((out >= 0).all())


def test_dict_encoder_joins_cnn_features_and_vector_keys_in_key_order() -> None:
    space = gym.spaces.Dict(
        {
            "speed": gym.spaces.Box(-1, 1, shape=(1,), dtype=np.float32),
            "image": gym.spaces.Box(0, 255, shape=(3, 32, 32), dtype=np.uint8),
            "accel": gym.spaces.Box(-1, 1, shape=(2,), dtype=np.float32),
        }
    )
    encoder = ObsEncoder(space, cnn_features=16)
    assert encoder.vector_keys == ("accel", "speed") and encoder.out_dim == 16 + 3
    obs = {
        "image": torch.zeros(4, 3, 32, 32, dtype=torch.uint8),
        "speed": torch.full((4, 1), 7.0),
        "accel": torch.full((4, 2), 5.0),
    }
    features = encoder(obs)
    assert features.shape == (4, 19)
    assert features[:, 16:].tolist() == [[5.0, 5.0, 7.0]] * 4


def test_parameter_groups_split_encoder_from_heads() -> None:
    space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, shape=(3, 32, 32), dtype=np.uint8)})
    critic = TwinCritic(space, action_dim=2, hidden_sizes=(8,), cnn_features=8)
    cnn, mlp = cnn_and_mlp_parameters(critic)
    critics = [cast(QNetwork, q) for q in critic.q]
    assert {id(p) for p in cnn} == {id(p) for q in critics for p in q.encoder.parameters()}
    assert {id(p) for p in mlp} == {id(p) for q in critics for p in q.mlp.parameters()}
    box = gym.spaces.Box(-1, 1, shape=(3,), dtype=np.float32)
    assert cnn_and_mlp_parameters(Actor(box, 1, (8,), 8))[0] == []


def test_actor_outputs_lie_in_the_normalized_range_and_critics_differ() -> None:
    torch.manual_seed(0)
    box = gym.spaces.Box(-1, 1, shape=(3,), dtype=np.float32)
    actor, critic = Actor(box, 2, (16,), 8), TwinCritic(box, 2, (16,), 8)
    obs = torch.randn(64, 3) * 100  # large inputs saturate tanh, never exceed it
    with torch.no_grad():
        action = actor(obs)
        q = critic(obs, action)
        q1 = critic.q1(obs, action)
    assert action.shape == (64, 2) and float(action.abs().max()) <= 1.0
    assert q.shape == (2, 64) and not torch.allclose(q[0], q[1])
    torch.testing.assert_close(q1, q[0])
