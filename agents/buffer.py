"""Replay buffer: preallocated numpy rings, images kept as uint8, Box or Dict observations.

Memory is allocated once (``np.zeros``; untouched pages cost nothing until written), so a run
that would not fit fails at the first steps of its life rather than hours in. Sampling draws
indices from the caller's seeded ``numpy.random.Generator``: the agent owns that generator, so a
run is reproducible and its state is checkpointed with the agent. Next observations are stored
alongside observations (no frame sharing), which keeps episode boundaries trivial.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from agents.networks import IMAGE_KEY, Obs

ArrayObs = np.ndarray | dict[str, np.ndarray]


@dataclass(frozen=True)
class Batch:
    """One sampled minibatch on the agent's device; actions normalized to [-1, 1], raw rewards."""

    obs: Obs
    action: Tensor
    reward: Tensor
    next_obs: Obs
    terminated: Tensor


def storage_dtype(key: str | None) -> type[np.generic]:
    """uint8 for a Dict observation's image (scaled to [0, 1] by the CNN), float32 for all else."""
    return np.uint8 if key == IMAGE_KEY else np.float32


def _storage(space: gym.Space, capacity: int, key: str | None = None) -> ArrayObs:
    """Preallocated arrays for one observation field (a dict of them for a Dict space)."""
    if isinstance(space, gym.spaces.Dict):
        return {name: _storage(sub, capacity, name) for name, sub in space.spaces.items()}  # type: ignore[misc]
    assert space.shape is not None
    return np.zeros((capacity, *space.shape), dtype=storage_dtype(key))


def _write(storage: ArrayObs, index: int, value: Any) -> None:
    if isinstance(storage, dict):
        for key, array in storage.items():
            array[index] = value[key]
    else:
        storage[index] = value


def _gather(storage: ArrayObs, indices: np.ndarray, device: torch.device) -> Obs:
    if isinstance(storage, dict):
        return {key: torch.from_numpy(array[indices]).to(device) for key, array in storage.items()}
    return torch.from_numpy(storage[indices]).to(device)


def _flat(prefix: str, storage: ArrayObs) -> dict[str, np.ndarray]:
    """Name every array of a field for an npz file: ``obs`` or ``obs.image``, ``obs.speed``..."""
    if isinstance(storage, dict):
        return {f"{prefix}.{key}": array for key, array in storage.items()}
    return {prefix: storage}


class ReplayBuffer:
    """A ring of the last ``capacity`` transitions (obs, action, reward, next_obs, terminated)."""

    def __init__(self, observation_space: gym.Space, action_dim: int, capacity: int) -> None:
        self.capacity = capacity
        self.obs = _storage(observation_space, capacity)
        self.next_obs = _storage(observation_space, capacity)
        self.action = np.zeros((capacity, action_dim), dtype=np.float32)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.pos = 0  # where the next transition goes
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs: Any, action: np.ndarray, reward: float, next_obs: Any, terminated: bool) -> None:
        """Store one transition (``action`` already normalized), overwriting the oldest when full."""
        _write(self.obs, self.pos, obs)
        _write(self.next_obs, self.pos, next_obs)
        self.action[self.pos] = action
        self.reward[self.pos] = reward
        self.terminated[self.pos] = terminated
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator, device: torch.device) -> Batch:
        """Uniformly sample ``batch_size`` stored transitions (with replacement)."""
        indices = rng.integers(0, self.size, size=batch_size)
        return Batch(
            obs=_gather(self.obs, indices, device),
            action=torch.from_numpy(self.action[indices]).to(device),
            reward=torch.from_numpy(self.reward[indices]).to(device),
            next_obs=_gather(self.next_obs, indices, device),
            terminated=torch.from_numpy(self.terminated[indices]).to(device),
        )

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            **_flat("obs", self.obs),
            **_flat("next_obs", self.next_obs),
            "action": self.action,
            "reward": self.reward,
            "terminated": self.terminated,
        }

    def save(self, path: Path) -> None:
        """Write the stored part of the ring to an ``.npz`` (plain arrays, no pickled objects)."""
        stored = {name: array[: self.size] for name, array in self._arrays().items()}
        np.savez(path, allow_pickle=False, pos=np.int64(self.pos), size=np.int64(self.size), **stored)

    def load(self, path: Path) -> None:
        """Restore contents and ring position written by ``save`` into this (same-shaped) buffer."""
        with np.load(path, allow_pickle=False) as data:
            size = int(data["size"])
            if size > self.capacity:
                raise ValueError(f"{path} holds {size} transitions; this buffer's capacity is {self.capacity}")
            for name, array in self._arrays().items():
                if name not in data:
                    raise ValueError(f"{path} has no {name!r} array: it was saved for another observation space")
                array[:size] = data[name]
            self.pos, self.size = int(data["pos"]), size
