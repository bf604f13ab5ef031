"""Actor and twin critic: an observation encoder per network, then an MLP.

A Box observation is flattened into the MLP. A Dict observation with an ``image`` key (uint8,
[C, H, W]) goes through a CNN encoder whose output joins the other (vector) keys before the MLP:
the CARLA agent's shape. Every network (actor, each critic) has its own encoder, so the critics
stay independent estimators, and ``cnn_and_mlp_parameters`` splits any of them into the two
groups whose gradient norms the diagnostics report.

Actions are normalized to [-1, 1] here (tanh); the agent maps them to the env's bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

Obs = Tensor | dict[str, Tensor]

IMAGE_KEY = "image"
MIN_IMAGE_SIZE = 32


class Linear(nn.Module):
    """y = x @ W + b, with W stored as (in, out), initialized like ``nn.Linear``.

    Why not ``nn.Linear``: it stores W as (out, in) and multiplies by W.T, and autograd then
    computes the weight gradient as (grad.T @ x).T. For a narrow input (Pendulum's 4 critic
    inputs) that product runs about 6x slower on CPU (77 vs 13 us at batch 256, one thread)
    than x.T @ grad, which is what autograd does for a row-major W.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default: U(-1/sqrt(in), 1/sqrt(in))
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addmm(self.bias, x, self.weight)


class MLP(nn.Module):
    """Linear layers with ReLU between them; ``sizes`` = [in, hidden..., out].

    ``layer_norm``: an ``nn.LayerNorm`` (elementwise affine) after each hidden linear layer, before
    its ReLU, none after the output layer. The norms live in a list of their own, so an MLP without
    them has the same parameters and state_dict keys as before the option existed.
    """

    def __init__(self, sizes: Sequence[int], layer_norm: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Linear(a, b) for a, b in pairwise(sizes))
        self.norms = nn.ModuleList(nn.LayerNorm(n) for n in sizes[1:-1]) if layer_norm else nn.ModuleList()

    def forward(self, x: Tensor) -> Tensor:
        *hidden, last = self.layers
        for i, layer in enumerate(hidden):
            x = layer(x)
            if self.norms:
                x = self.norms[i](x)
            x = x.relu_()  # in place: one activation-sized buffer less per layer
        return last(x)


class CNN(nn.Module):
    """Image encoder: four stride-2 convolutions, then a linear projection to ``features``.

    Padded stride-2 convolutions work for any image of at least 32x32 (the output is
    ceil(H/16) x ceil(W/16)); the projection's input size is measured, not assumed, so the driving
    sim's 3x64x64 and CARLA's larger cameras both fit. uint8 pixels are scaled to [0, 1] here, so
    the replay buffer keeps images at one byte per channel.
    """

    def __init__(self, image_shape: tuple[int, int, int], features: int) -> None:
        super().__init__()
        channels = image_shape[0]
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, *image_shape)).shape[1]
        self.project = nn.Sequential(nn.Linear(flat, features), nn.ReLU())
        self.features = features

    def forward(self, image: Tensor) -> Tensor:
        return self.project(self.convs(image.float() / 255.0))


class ObsEncoder(nn.Module):
    """Observation -> flat float features: Box flattened; Dict = CNN(image) joined with vector keys."""

    def __init__(self, observation_space: gym.Space, cnn_features: int) -> None:
        super().__init__()
        if isinstance(observation_space, gym.spaces.Box):
            self.vector_keys: tuple[str, ...] = ()
            self.cnn: CNN | None = None
            self.out_dim = math.prod(observation_space.shape)
            return
        if not isinstance(observation_space, gym.spaces.Dict):
            raise ValueError(
                f"observation space {observation_space} is not supported: use a Box, or a Dict of "
                f"Boxes with an optional {IMAGE_KEY!r} key (uint8 [C, H, W])"
            )
        spaces = dict(observation_space.spaces)
        image_space = spaces.pop(IMAGE_KEY, None)
        self.cnn = None if image_space is None else CNN(check_image_space(image_space), cnn_features)
        vector_sizes: dict[str, int] = {}
        for key, space in spaces.items():
            if not isinstance(space, gym.spaces.Box):
                raise ValueError(f"observation key {key!r} is {space}: only Box vector keys are supported")
            vector_sizes[key] = math.prod(space.shape)
        self.vector_keys = tuple(sorted(vector_sizes))
        vector_dim = sum(vector_sizes.values())
        self.out_dim = (0 if self.cnn is None else cnn_features) + vector_dim

    def forward(self, obs: Obs) -> Tensor:
        if isinstance(obs, Tensor):
            return obs.flatten(1)
        parts = [] if self.cnn is None else [self.cnn(obs[IMAGE_KEY])]
        parts += [obs[key].flatten(1) for key in self.vector_keys]
        return torch.cat(parts, dim=1)


def check_image_space(space: gym.Space) -> tuple[int, int, int]:
    """The (C, H, W) of a valid image space, or a ValueError saying what an image must be."""
    shape = getattr(space, "shape", None)
    if (
        not isinstance(space, gym.spaces.Box)
        or space.dtype != np.uint8
        or shape is None
        or len(shape) != 3
        or min(shape[1:]) < MIN_IMAGE_SIZE
    ):
        raise ValueError(
            f"observation key {IMAGE_KEY!r} must be a uint8 Box of shape [C, H, W] with H, W >= "
            f"{MIN_IMAGE_SIZE} (channels first); got {space}"
        )
    return int(shape[0]), int(shape[1]), int(shape[2])


class Actor(nn.Module):
    """pi(s) = tanh(MLP(encoder(s))), an action in [-1, 1]^action_dim."""

    def __init__(
        self, observation_space: gym.Space, action_dim: int, hidden_sizes: Sequence[int], cnn_features: int
    ) -> None:
        super().__init__()
        self.encoder = ObsEncoder(observation_space, cnn_features)
        self.mlp = MLP([self.encoder.out_dim, *hidden_sizes, action_dim])

    def forward(self, obs: Obs) -> Tensor:
        return torch.tanh(self.mlp(self.encoder(obs)))


class QNetwork(nn.Module):
    """Q(s, a) = MLP([encoder(s), a]), one value per batch row.

    ``layer_norm`` puts a LayerNorm after each hidden layer of the MLP head (not in the image
    encoder), as the recent methods that keep Q learning bounded do: RLPD (Ball et al. 2023), BRO
    (Nauman et al. 2024), SimBa (Lee et al. 2025), and PQN (Gallici et al. 2025), which shows
    LayerNorm with L2 makes TD learning stable even without target networks. A normalized hidden
    layer has unit scale whatever the weights before it, so Q can grow only through the last
    LayerNorm's gains and biases and the output layer, not through every layer's weights at once.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_dim: int,
        hidden_sizes: Sequence[int],
        cnn_features: int,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = ObsEncoder(observation_space, cnn_features)
        self.mlp = MLP([self.encoder.out_dim + action_dim, *hidden_sizes, 1], layer_norm)

    def forward(self, obs: Obs, action: Tensor) -> Tensor:
        return self.mlp(torch.cat([self.encoder(obs), action], dim=1)).squeeze(1)


class TwinCritic(nn.Module):
    """TD3's two independent critics; ``forward`` gives both as [2, B], ``q1`` the first alone.

    Kept as two separate networks rather than one batched (stacked-weight) module: measured on
    CPU with one thread, torch.bmm over the pair ran no faster than two matrix products.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_dim: int,
        hidden_sizes: Sequence[int],
        cnn_features: int,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.q = nn.ModuleList(
            QNetwork(observation_space, action_dim, hidden_sizes, cnn_features, layer_norm) for _ in range(2)
        )

    def forward(self, obs: Obs, action: Tensor) -> Tensor:
        return torch.stack([q(obs, action) for q in self.q])

    def q1(self, obs: Obs, action: Tensor) -> Tensor:
        return self.q[0](obs, action)


def cnn_and_mlp_parameters(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split a network's parameters into image-encoder ones and the rest (MLP heads)."""
    cnn_ids = {id(p) for sub in module.modules() if isinstance(sub, CNN) for p in sub.parameters()}
    params = list(module.parameters())
    return [p for p in params if id(p) in cnn_ids], [p for p in params if id(p) not in cnn_ids]
