"""The training episode in flight, and how a resumed trial gets back into it exactly.

A gymnasium env draws an episode's randomness from its own generator (``env.np_random``) at reset
and is deterministic given the actions after it (Pendulum, MuJoCo, the embedded simulator). So the
generator's state just before the episode's reset (or the reset's seed), plus the actions taken
since, rebuild the episode on a fresh env made from the same settings: a checkpoint stores those,
and a resumed trial replays them instead of starting a new episode (which would make its run
differ from the uninterrupted one). The observation reached by the replay is checked against a
digest of the one the checkpoint saw; an env that does not replay exactly, or whose world lives in
a server (CARLA), starts a new episode instead, and the trial's summary says so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

EPISODE_FILE = "episode.json"


def rng_state(env: gym.Env) -> dict[str, Any]:
    """The state of the env's own generator, the source of its episodes' randomness."""
    return env.unwrapped.np_random.bit_generator.state


def set_rng_state(env: gym.Env, state: dict[str, Any]) -> None:
    env.unwrapped.np_random.bit_generator.state = state


def observation_digest(obs: Any) -> str:
    """A hash of an observation (array or dict of arrays), exact to the bit."""
    digest = hashlib.sha256()
    parts = sorted(obs.items()) if isinstance(obs, dict) else [("", obs)]
    for key, value in parts:
        array = np.ascontiguousarray(value)
        digest.update(f"{key}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass
class TrainingEpisode:
    """The current training episode: its return and length so far, and what replays it."""

    reset_seed: int | None = None  # the reset's seed, or None when it drew from the env's generator ...
    rng_state: dict[str, Any] | None = None  # ... whose state just before that reset is kept here
    actions: list[list[float]] = field(default_factory=list)
    episode_return: float = 0.0
    length: int = 0

    @classmethod
    def begin(cls, env: gym.Env, seed: int | None = None) -> tuple[TrainingEpisode, Any]:
        """Reset ``env`` for a new episode (seeded, or continuing its generator); return it and the first obs."""
        state = None if seed is not None else rng_state(env)
        obs, _ = env.reset(seed=seed)
        return cls(reset_seed=seed, rng_state=state), obs

    def record(self, action: np.ndarray, reward: float) -> None:
        self.actions.append(np.asarray(action).tolist())
        self.episode_return += reward
        self.length += 1

    def save(self, directory: Path, obs: Any) -> None:
        record = {**asdict(self), "obs_digest": observation_digest(obs)}
        (directory / EPISODE_FILE).write_text(json.dumps(record))

    def replay(self, env: gym.Env) -> Any:
        """Bring a fresh ``env`` to where this episode was: the same reset, then the same actions."""
        # A first reset initializes the env's generator (an unseeded first reset of Drive-v0 seeds
        # itself from its config); the episode's own reset then starts from the saved state.
        obs, _ = env.reset(seed=self.reset_seed if self.reset_seed is not None else 0)
        if self.rng_state is not None:
            set_rng_state(env, self.rng_state)
            obs, _ = env.reset()
        dtype = env.action_space.dtype
        for action in self.actions:
            obs, *_ = env.step(np.asarray(action, dtype=dtype))
        return obs


def resume_episode(env: gym.Env, checkpoint: Path, *, replayable: bool, seed: int) -> tuple[TrainingEpisode, Any, str]:
    """The episode a checkpoint was taken in, replayed on ``env`` when it can be; else a new one.

    Returns the episode, the current observation and a note for the trial's summary. A new
    episode is seeded with ``seed`` (the trial's seed plus its env steps keeps a resume repeatable).
    """
    path = checkpoint / EPISODE_FILE
    if not replayable:
        note = "episode restarted: this env's world lives in a server and cannot be replayed"
    elif not path.is_file():
        note = f"episode restarted: the checkpoint has no {EPISODE_FILE}"
    else:
        record = json.loads(path.read_text())
        expected = record.pop("obs_digest")
        episode = TrainingEpisode(**record)
        obs = episode.replay(env)
        if observation_digest(obs) == expected:
            return episode, obs, f"episode replayed exactly ({episode.length} steps)"
        note = "episode restarted: replaying its actions did not reach the checkpoint's observation"
    episode, obs = TrainingEpisode.begin(env, seed=seed)
    return episode, obs, note
