"""One trial, assembled in one place: env + TD3 agent + loop + loggers + the actor-path Q guard.

The same function runs a single trial from ``python -m study.train`` and each Ray Tune trial
(``study.trainable`` passes ``on_report``); it knows nothing of Ray. The loop is CleanRL-shaped:
act, step, store, update; every ``report_every`` env steps it gathers the metrics of DESIGN.md,
judges them with the guard, logs them to TensorBoard and hands them to ``on_report``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import envs
from agents import TD3
from study import metrics as m
from study.config import TrialConfig
from study.guard import GuardState, StopReason, actor_q_excess, guard_step, q_interval

OnReport = Callable[[dict[str, float], Path | None], None]

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "trial_state.json"
SUMMARY_FILE = "summary.json"
# Evaluation episodes use their own seeds, the same at every evaluation and in every arm,
# so that returns compare across checkpoints and configurations.
EVAL_SEED_OFFSET = 1_000_000


@dataclass
class TrialState:
    """What a checkpoint restores beyond the agent: the trial's own bookkeeping."""

    episodes: int = 0
    episode_return: float = math.nan
    episode_length: float = math.nan
    eval_return_mean: float = math.nan
    eval_return_std: float = math.nan
    best_eval_return: float = -math.inf
    max_actor_q: float = -math.inf
    min_actor_q: float = math.inf
    q_interval: tuple[float, float] | None = None
    guard_strikes: int = 0
    guard_reason: StopReason | None = None
    stop_reason: StopReason | None = None
    stop_step: int | None = None
    wall_time_s: float = 0.0
    recent_returns: list[float] = field(default_factory=list)
    recent_lengths: list[int] = field(default_factory=list)

    @property
    def guard(self) -> GuardState:
        return GuardState(self.guard_strikes, self.guard_reason)

    @guard.setter
    def guard(self, state: GuardState) -> None:
        self.guard_strikes, self.guard_reason = state.strikes, state.last_reason

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> TrialState:
        data = json.loads(path.read_text())
        if data.get("q_interval") is not None:
            data["q_interval"] = tuple(data["q_interval"])
        return cls(**data)


def run_trial(
    cfg: TrialConfig,
    out_dir: Path | str,
    *,
    on_report: OnReport | None = None,
    resume_from: Path | str | None = None,
    progress: bool = True,
    stop_on_guard: bool = True,
    between_episodes: Callable[[], None] | None = None,
    tensorboard: bool = True,
) -> dict[str, Any]:
    """Train one TD3 agent for ``cfg.steps`` env steps; return (and write) its summary.

    ``resume_from`` is a checkpoint directory written by an earlier call: the agent (networks,
    optimizers, counters, RNG states, buffer) and the trial's bookkeeping continue from it.
    With ``stop_on_guard=False`` the guard's metrics are still reported but the trial never stops
    itself: the Ray scheduler makes that decision for the whole study. ``between_episodes`` runs
    before every reset (the CARLA pool counts episodes there, and restarts or recycles its server).
    ``tensorboard=False`` leaves the events to the caller (a Ray study's driver writes them).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.torch_threads)

    env = envs.make(cfg.env, cfg.env_settings)
    agent = TD3(env.observation_space, env.action_space, cfg.agent, device=cfg.device, seed=cfg.seed)
    declared_range = envs.declared_reward_range(env)
    state = TrialState()
    if resume_from is not None:
        agent.load(resume_from)
        state = TrialState.load(Path(resume_from) / STATE_FILE)

    writer = None
    if tensorboard:
        writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=agent.env_steps or None)
        writer.add_text("config", f"```\n{json.dumps(cfg.model_dump(mode='json'), indent=2)}\n```", agent.env_steps)
    bar = tqdm(total=cfg.steps, initial=agent.env_steps, disable=not progress, unit="step", dynamic_ncols=True)
    started = time.perf_counter()
    try:
        # A resumed run restarts its episode; reseeding by step keeps that reproducible.
        obs, _ = env.reset(seed=cfg.seed + agent.env_steps)
        episode_return, episode_length = 0.0, 0
        window = _RateWindow.start(agent)
        while agent.env_steps < cfg.steps:
            action = agent.act(obs, explore=True)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            agent.observe(obs, action, float(reward), next_obs, terminated)
            episode_return += float(reward)
            episode_length += 1
            obs = next_obs
            if terminated or truncated:
                state.recent_returns.append(episode_return)
                state.recent_lengths.append(episode_length)
                state.episodes += 1
                if between_episodes is not None:
                    between_episodes()
                obs, _ = env.reset()
                episode_return, episode_length = 0.0, 0

            step = agent.env_steps
            last_step = step == cfg.steps
            report_due = step % cfg.report_every == 0 or last_step
            agent_metrics = agent.update(diagnostics=report_due)
            if not report_due:
                continue

            rates = window.finish(agent)
            if step % cfg.eval_every == 0 or last_step:
                _record_eval(state, *evaluate(env, agent, cfg.eval_episodes, cfg.seed))
                obs, _ = env.reset()  # evaluation used the env: start a fresh training episode
                episode_return, episode_length = 0.0, 0
            report = _build_report(state, agent_metrics, rates, step)
            interval = q_interval(declared_range, agent.reward_range_seen, cfg.agent.gamma, cfg.agent.reward_clip)
            stop = _apply_guard(state, report, interval, m.ACTOR_Q_MAX in agent_metrics, cfg, stop_on_guard)
            if stop:
                state.stop_reason, state.stop_step = stop, step

            state.wall_time_s += time.perf_counter() - started
            started = time.perf_counter()
            checkpoint = None
            if step % cfg.checkpoint_every == 0 or last_step or stop:
                checkpoint = save_checkpoint(out_dir / CHECKPOINT_DIR, agent, state, cfg.checkpoint_buffer)
            _log_tensorboard(writer, report, step)
            bar.update(step - bar.n)
            bar.set_postfix(_progress_postfix(report), refresh=False)
            if on_report is not None:
                on_report(report, checkpoint)
            window = _RateWindow.start(agent)
            if stop:
                break
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        env.close()

    summary = _summary(state, agent.env_steps, cfg)
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def evaluate(env: gym.Env, agent: TD3, episodes: int, seed: int) -> tuple[float, float]:
    """Mean and std of the deterministic policy's return over ``episodes`` seeded episodes."""
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=EVAL_SEED_OFFSET + seed * 1_000 + episode)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs, explore=False))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns)), float(np.std(returns))


@dataclass
class _RateWindow:
    """Env steps and updates per second of training time (evaluation and I/O excluded)."""

    time: float
    env_steps: int
    updates: int

    @classmethod
    def start(cls, agent: TD3) -> _RateWindow:
        return cls(time.perf_counter(), agent.env_steps, agent.updates)

    def finish(self, agent: TD3) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.time, 1e-9)
        return {
            "perf/env_steps_per_s": (agent.env_steps - self.env_steps) / elapsed,
            "perf/updates_per_s": (agent.updates - self.updates) / elapsed,
        }


def _record_eval(state: TrialState, mean: float, std: float) -> None:
    state.eval_return_mean, state.eval_return_std = mean, std
    state.best_eval_return = max(state.best_eval_return, mean)


def _build_report(
    state: TrialState, agent_metrics: dict[str, float], rates: dict[str, float], step: int
) -> dict[str, float]:
    """This report's values: the agent's diagnostics plus the trial's own, every key present."""
    if state.recent_returns:  # episodes finished since the last report; else keep the last value
        state.episode_return = float(np.mean(state.recent_returns))
        state.episode_length = float(np.mean(state.recent_lengths))
        state.recent_returns.clear()
        state.recent_lengths.clear()
    values = {
        **agent_metrics,
        **rates,
        m.ENV_STEPS: step,
        "train/episode_return": state.episode_return,
        "train/episode_length": state.episode_length,
        m.EVAL_RETURN: state.eval_return_mean,
        "eval/return_std": state.eval_return_std,
    }
    return m.complete_report(values)


def _apply_guard(
    state: TrialState,
    report: dict[str, float],
    interval: tuple[float, float] | None,
    actor_q_measured: bool,
    cfg: TrialConfig,
    stop_on_guard: bool,
) -> StopReason | None:
    """Fill the guard's metrics into the report, advance the guard, and say whether to stop.

    ``actor_q_measured`` is False until the agent's first actor update: NaN then means "nothing
    to judge yet", while a NaN after it means the values themselves are non-finite.
    """
    q_max, q_min = report[m.ACTOR_Q_MAX], report[m.ACTOR_Q_MIN]
    if math.isfinite(q_max):
        state.max_actor_q = max(state.max_actor_q, q_max)
    if math.isfinite(q_min):
        state.min_actor_q = min(state.min_actor_q, q_min)
    buffer_q = report["train/q1_value"]
    if buffer_q and math.isfinite(buffer_q):
        report["guard/actor_to_buffer_q_ratio"] = report["debug/actor_q_mean"] / buffer_q
    if interval is None:
        return None
    state.q_interval = interval
    report["guard/q_low"], report["guard/q_high"] = interval
    if actor_q_measured:
        report[m.GUARD_EXCESS] = actor_q_excess(q_max, q_min, interval)
    state.guard, reason = guard_step(state.guard, report[m.GUARD_EXCESS], cfg.guard)
    return reason if stop_on_guard else None


def save_checkpoint(directory: Path, agent: TD3, state: TrialState, include_buffer: bool) -> Path:
    """Write a complete checkpoint next to ``directory`` and swap it in atomically.

    A kill while writing leaves the previous checkpoint intact: at most the work since it is lost.
    """
    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    agent.save(staging, include_buffer=include_buffer)
    state.save(staging / STATE_FILE)
    previous = directory.with_name(directory.name + ".old")
    if directory.exists():
        os.replace(directory, previous)
    os.replace(staging, directory)
    shutil.rmtree(previous, ignore_errors=True)
    return directory


def _log_tensorboard(writer: SummaryWriter | None, report: dict[str, float], step: int) -> None:
    if writer is None:
        return
    for key, value in m.tensorboard_scalars(report).items():
        writer.add_scalar(key, value, step)


def _progress_postfix(report: dict[str, float]) -> dict[str, str]:
    return {
        "return": f"{report['train/episode_return']:.1f}",
        "eval": f"{report[m.EVAL_RETURN]:.1f}",
        "actor_q_max": f"{report[m.ACTOR_Q_MAX]:.3g}",
        "q_high": f"{report['guard/q_high']:.3g}",
    }


def _summary(state: TrialState, env_steps: int, cfg: TrialConfig) -> dict[str, Any]:
    def finite_or_none(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {
        "env": cfg.env,
        "seed": cfg.seed,
        "env_steps": env_steps,
        m.EVAL_RETURN: finite_or_none(state.eval_return_mean),
        "eval/return_std": finite_or_none(state.eval_return_std),
        "best_eval_return": finite_or_none(state.best_eval_return),
        "stop_reason": state.stop_reason,
        "stop_step": state.stop_step,
        "max_actor_q": finite_or_none(state.max_actor_q),
        "min_actor_q": finite_or_none(state.min_actor_q),
        "q_interval": list(state.q_interval) if state.q_interval else None,
        "episodes": state.episodes,
        "wall_time_s": round(state.wall_time_s, 3),
        "config": cfg.model_dump(mode="json"),
    }
