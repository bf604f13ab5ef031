"""The replay buffer: preallocated ring, uint8 images, seeded sampling, npz round trip."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.buffer import ReplayBuffer

BOX = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float64)
DICT = gym.spaces.Dict(
    {
        "image": gym.spaces.Box(0, 255, shape=(1, 32, 32), dtype=np.uint8),
        "speed": gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32),
    }
)
CPU = torch.device("cpu")


def fill(buffer: ReplayBuffer, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        buffer.add(np.full(2, i), np.full(1, i / 100), float(i), np.full(2, i + 1), i % 3 == 0)


def test_ring_keeps_the_newest_transitions() -> None:
    buffer = ReplayBuffer(BOX, action_dim=1, capacity=5)
    assert buffer.obs.dtype == np.float32 and buffer.obs.shape == (5, 2)  # type: ignore[union-attr]
    fill(buffer, 7)
    assert len(buffer) == 5 and buffer.pos == 2
    assert sorted(buffer.reward.tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    i = int(np.argmax(buffer.reward == 6.0))
    assert buffer.next_obs[i].tolist() == [7.0, 7.0] and buffer.terminated[i] == 1.0  # type: ignore[index]


def test_sampling_is_uniform_over_stored_rows_and_reproducible_per_generator() -> None:
    buffer = ReplayBuffer(BOX, action_dim=1, capacity=100)
    fill(buffer, 10)
    a = buffer.sample(2000, np.random.default_rng(0), CPU)
    b = buffer.sample(2000, np.random.default_rng(0), CPU)
    assert torch.equal(a.reward, b.reward) and torch.equal(a.obs, b.obs)  # type: ignore[arg-type]
    assert set(a.reward.tolist()) == set(map(float, range(10)))  # never an unwritten row
    torch.testing.assert_close(a.obs[:, 0], a.reward)  # type: ignore[index]  # rows stay together
    assert a.reward.dtype == a.terminated.dtype == a.action.dtype == torch.float32


def test_images_are_stored_and_sampled_as_uint8() -> None:
    buffer = ReplayBuffer(DICT, action_dim=1, capacity=8)
    assert buffer.obs["image"].dtype == np.uint8 and buffer.obs["speed"].dtype == np.float32  # type: ignore[index]
    obs = {"image": np.full((1, 32, 32), 200, dtype=np.uint8), "speed": np.array([0.5], dtype=np.float32)}
    buffer.add(obs, np.zeros(1), 1.0, obs, False)
    batch = buffer.sample(4, np.random.default_rng(0), CPU)
    assert batch.obs["image"].dtype == torch.uint8 and int(batch.obs["image"].max()) == 200  # type: ignore[index]


@pytest.mark.parametrize("n", [3, 7])
def test_save_and_load_restore_contents_and_position(tmp_path: Path, n: int) -> None:
    buffer = ReplayBuffer(BOX, action_dim=1, capacity=5)
    fill(buffer, n)
    buffer.save(tmp_path / "b.npz")
    restored = ReplayBuffer(BOX, action_dim=1, capacity=5)
    restored.load(tmp_path / "b.npz")
    assert (restored.pos, len(restored)) == (buffer.pos, len(buffer))
    for name in ("obs", "next_obs", "action", "reward", "terminated"):
        assert np.array_equal(getattr(restored, name), getattr(buffer, name))
    fill(buffer, 2, start=100)
    fill(restored, 2, start=100)
    assert np.array_equal(restored.reward, buffer.reward)


def test_load_refuses_a_buffer_that_does_not_fit(tmp_path: Path) -> None:
    big = ReplayBuffer(BOX, action_dim=1, capacity=10)
    fill(big, 8)
    big.save(tmp_path / "b.npz")
    with pytest.raises(ValueError, match="holds 8 transitions; this buffer's capacity is 5"):
        ReplayBuffer(BOX, action_dim=1, capacity=5).load(tmp_path / "b.npz")
    with pytest.raises(ValueError, match="'obs.image'"):
        ReplayBuffer(DICT, action_dim=1, capacity=10).load(tmp_path / "b.npz")
