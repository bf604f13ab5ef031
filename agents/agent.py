"""The TD3 agent: act, observe, update, save, load. It makes a CleanRL-style loop trivial:

    agent = TD3(env.observation_space, env.action_space, TD3Config(), seed=0)
    obs, _ = env.reset(seed=0)
    for step in range(1, steps + 1):
        action = agent.act(obs)                    # uniform random until learning_starts
        next_obs, reward, terminated, truncated, _ = env.step(action)
        agent.observe(obs, action, reward, next_obs, terminated)
        metrics = agent.update(diagnostics=step % 500 == 0)
        obs = env.reset()[0] if terminated or truncated else next_obs

Randomness (initial weights, exploration, uniform warm-up actions, minibatch sampling, target
smoothing noise) comes from the agent's own seeded generators, never the global ones, and those
generators are checkpointed: a resumed CPU run continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.buffer import Batch, ReplayBuffer, storage_dtype
from agents.config import TD3Config
from agents.diagnostics import actor_metrics, alert_metrics, critic_metrics, explosion_flags, to_floats
from agents.networks import Obs
from agents.td3 import (
    ActorStep,
    CriticStep,
    TD3Networks,
    make_optimizers,
    regroup_critic_optimizer_state,
    smoothing_noise,
    td3_update,
)

AGENT_FILE = "agent.pt"
BUFFER_FILE = "buffer.npz"
_NETWORKS = ("actor", "critic", "actor_target", "critic_target")


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _action_bounds(space: gym.Space) -> tuple[np.ndarray, np.ndarray]:
    if (
        not isinstance(space, gym.spaces.Box)
        or len(space.shape) != 1
        or not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high)))
    ):
        raise ValueError(f"TD3 needs a 1-D Box action space with finite bounds; got {space}")
    return space.low.astype(np.float64), space.high.astype(np.float64)


def _restore_generator(generator: torch.Generator, saved: torch.Tensor, saved_device: str) -> None:
    """Put a saved generator state into ``generator``, across device types too.

    CPU (Mersenne Twister) and CUDA (Philox) generators keep states of different shapes, so a
    state saved on one cannot be set on the other. Moving a checkpoint between them reseeds the
    generator from a hash of the saved state: deterministic, touching no other random stream,
    but not the same noise (CUDA and CPU runs do not match bit for bit anyway).
    """
    if saved_device == generator.device.type:
        generator.set_state(saved)
        return
    digest = hashlib.sha256(saved.numpy().tobytes()).digest()
    generator.manual_seed(int.from_bytes(digest[:8], "little") >> 1)


class TD3:
    """A TD3 agent (Fujimoto et al. 2018) with the actor-path Q diagnostics of DESIGN.md."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        cfg: TD3Config | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
    ) -> None:
        self.cfg = cfg or TD3Config()
        self.device = resolve_device(device)
        self._low, self._high = _action_bounds(action_space)
        self._action_dtype = action_space.dtype
        action_dim = self._low.shape[0]

        self._rng = np.random.default_rng(seed)  # warm-up and exploration actions, minibatches
        self._generator = torch.Generator(device=self.device).manual_seed(seed)  # target smoothing
        with torch.random.fork_rng(devices=[]):  # initial weights, leaving torch's global RNG as it was
            torch.manual_seed(seed)
            self.nets = TD3Networks.build(observation_space, action_dim, self.cfg, self.device)
        self.optimizers = make_optimizers(self.nets, self.cfg)
        self.buffer = ReplayBuffer(observation_space, action_dim, self.cfg.buffer_size)

        self.env_steps = 0
        self.updates = 0
        self._reward_min, self._reward_max = math.inf, -math.inf
        self._alert_counts = torch.zeros(2, dtype=torch.float64, device=self.device)  # warning, critical
        self._alert_thresholds = torch.tensor(
            [self.cfg.grad_norm_warning, self.cfg.grad_norm_critical], device=self.device
        )
        self._last_actor_step: ActorStep | None = None

    # ---- acting -------------------------------------------------------------------------------

    def act(self, obs: Any, explore: bool = True) -> np.ndarray:
        """An action within the env's bounds for one observation.

        ``explore``: uniform random until ``learning_starts`` env steps, then the actor plus
        N(0, exploration_noise) in normalized units, clipped. Otherwise the deterministic actor.
        """
        if explore and self.env_steps < self.cfg.learning_starts:
            return self._rng.uniform(self._low, self._high).astype(self._action_dtype)
        with torch.no_grad():
            action = self.nets.actor(self._single_obs(obs))[0].cpu().numpy()
        if explore:
            action = np.clip(action + self._rng.normal(0.0, self.cfg.exploration_noise, action.shape), -1.0, 1.0)
        return self._to_env(action)

    def observe(self, obs: Any, action: np.ndarray, reward: float, next_obs: Any, terminated: bool) -> None:
        """Store one transition (``terminated``, not truncated: a time limit still bootstraps)."""
        reward = float(reward)
        normalized = np.clip(self._normalize(np.asarray(action, dtype=np.float64)), -1.0, 1.0)  # as the env clips
        self.buffer.add(obs, normalized, reward, next_obs, terminated)
        self._reward_min, self._reward_max = min(self._reward_min, reward), max(self._reward_max, reward)
        self.env_steps += 1

    @property
    def has_actor_step(self) -> bool:
        """Whether an actor update has happened: before it, there is no actor-path Q to judge."""
        return self._last_actor_step is not None

    @property
    def reward_range_seen(self) -> tuple[float, float] | None:
        """The smallest and largest raw reward observed so far; None before the first."""
        return None if self._reward_min > self._reward_max else (float(self._reward_min), float(self._reward_max))

    def _to_env(self, action: np.ndarray) -> np.ndarray:
        scaled = self._low + (action + 1.0) * 0.5 * (self._high - self._low)
        return np.clip(scaled, self._low, self._high).astype(self._action_dtype)

    def _normalize(self, action: np.ndarray) -> np.ndarray:
        return 2.0 * (action - self._low) / (self._high - self._low) - 1.0

    def _single_obs(self, obs: Any) -> Obs:
        """One observation as a batch of one on the device, in the buffer's dtypes."""
        if isinstance(obs, dict):
            return {key: self._single_obs_part(value, key) for key, value in obs.items()}
        return self._single_obs_part(obs, None)

    def _single_obs_part(self, value: Any, key: str | None) -> torch.Tensor:
        array = np.asarray(value, dtype=storage_dtype(key))
        return torch.from_numpy(array).unsqueeze(0).to(self.device)

    # ---- learning -----------------------------------------------------------------------------

    def update(self, diagnostics: bool = False) -> dict[str, float]:
        """One TD3 gradient step (critic; actor and targets every ``policy_delay``).

        A no-op before ``learning_starts`` env steps or a full batch. Returns every agent-side
        DESIGN.md metric when ``diagnostics``, else {} (reading values back forces a device sync,
        so a trial asks only on its reporting cadence). Actor-path metrics come from the most
        recent actor step and are absent before the first one (``has_actor_step``).
        """
        due = self.next_update()
        if due is None:
            return {}
        batch, update_actor = due
        critic, actor = td3_update(batch, self.nets, self.optimizers, self.cfg, self._generator, update_actor)
        return self.record_update(batch, critic, actor, diagnostics)

    def next_update(self) -> tuple[Batch, bool] | None:
        """Count the next update and draw its minibatch from the agent's generator; whether it steps
        the actor. None while no update is due (before ``learning_starts`` or a full batch).

        Apart from the maths so that a population (``agents.population``) draws every member's
        batch exactly as that member alone would, then updates all members at once.
        """
        if self.env_steps < self.cfg.learning_starts or len(self.buffer) < self.cfg.batch_size:
            return None
        self.updates += 1
        batch = self.buffer.sample(self.cfg.batch_size, self._rng, self.device)
        return batch, self.updates % self.cfg.policy_delay == 0

    def smoothing_noise(self, batch: Batch) -> torch.Tensor | None:
        """This update's target smoothing noise, from the agent's own generator (``td3.smoothing_noise``)."""
        return smoothing_noise(batch, self.cfg, self._generator)

    def record_update(
        self, batch: Batch, critic: CriticStep, actor: ActorStep | None, diagnostics: bool
    ) -> dict[str, float]:
        """Count the update's gradient-explosion alerts, keep its actor step for the actor-path
        metrics, and return the metrics when ``diagnostics`` (see ``update``)."""
        self._alert_counts += explosion_flags(critic, actor, self._alert_thresholds)
        if actor is not None:
            self._last_actor_step = actor
        if not diagnostics:
            return {}
        return to_floats(
            {
                **critic_metrics(critic, batch.reward, batch.terminated, self.cfg.gamma),
                **actor_metrics(self._last_actor_step),
                **alert_metrics(self._alert_counts),
            }
        )

    # ---- checkpoints --------------------------------------------------------------------------

    def save(self, path: str | Path, include_buffer: bool = False) -> None:
        """Write the agent to the directory ``path``: ``agent.pt`` and, if asked, ``buffer.npz``.

        ``agent.pt`` holds only tensors and plain values (loaded with ``weights_only=True``); the
        config and numpy's RNG state travel as JSON strings.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {
            "config": self.cfg.model_dump_json(),
            **{name: getattr(self.nets, name).state_dict() for name in _NETWORKS},
            "actor_optimizer": self.optimizers.actor.state_dict(),
            "critic_optimizer": self.optimizers.critic.state_dict(),
            "env_steps": self.env_steps,
            "updates": self.updates,
            "reward_range": [self._reward_min, self._reward_max],
            "alert_counts": self._alert_counts,
            "numpy_rng": json.dumps(self._rng.bit_generator.state),
            "torch_rng": self._generator.get_state(),
            "torch_rng_device": self._generator.device.type,
            # The diagnostics of the latest actor step, so that a report right after a resume reads
            # what the uninterrupted run's would.
            "last_actor_step": None if self._last_actor_step is None else asdict(self._last_actor_step),
        }
        torch.save(state, path / AGENT_FILE)
        buffer_file = path / BUFFER_FILE
        if include_buffer:
            self.buffer.save(buffer_file)
        else:
            buffer_file.unlink(missing_ok=True)  # never pair this agent with an older buffer

    def load(self, path: str | Path) -> None:
        """Restore an agent saved by ``save`` into this one (built with the same spaces and config).

        Without ``buffer.npz`` the buffer stays as it is (empty for a fresh agent), and updates
        resume once it holds a batch again.
        """
        path = Path(path)
        state = torch.load(path / AGENT_FILE, map_location=self.device, weights_only=True)
        saved_cfg = TD3Config.model_validate_json(state["config"])
        if saved_cfg != self.cfg:
            differences = ", ".join(
                f"{name}={getattr(saved_cfg, name)!r} (checkpoint) vs {getattr(self.cfg, name)!r}"
                for name in TD3Config.model_fields
                if getattr(saved_cfg, name) != getattr(self.cfg, name)
            )
            raise ValueError(f"{path} was saved with a different TD3Config: {differences}")
        for name in _NETWORKS:
            getattr(self.nets, name).load_state_dict(state[name])
        self.optimizers.actor.load_state_dict(state["actor_optimizer"])
        self.optimizers.critic.load_state_dict(regroup_critic_optimizer_state(state["critic_optimizer"], self.nets.critic))
        self.env_steps, self.updates = state["env_steps"], state["updates"]
        self._reward_min, self._reward_max = state["reward_range"]
        self._alert_counts.copy_(state["alert_counts"])
        self._rng.bit_generator.state = json.loads(state["numpy_rng"])
        # Checkpoints from before these two keys existed were saved on the device they are loaded on.
        _restore_generator(self._generator, state["torch_rng"].cpu(), state.get("torch_rng_device", self.device.type))
        last_actor_step = state.get("last_actor_step")
        self._last_actor_step = None if last_actor_step is None else ActorStep(**last_actor_step)
        if (path / BUFFER_FILE).exists():
            self.buffer.load(path / BUFFER_FILE)

