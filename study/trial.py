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
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
from study.episode import TrainingEpisode, resume_episode, rng_state, set_rng_state
from study.guard import GuardState, StopReason, actor_q_excess, guard_step, q_interval
from study.results import CURVE_KEYS, SUMMARY_FILE, summarize

OnReport = Callable[[dict[str, float], Path | None], None]

CHECKPOINT_DIR = "checkpoint"
SUBNORMAL_BITS = 1 << 20  # a float32 of these bits is 1.5e-39: subnormal
PARALLEL_PROBE_SIZE = 1 << 18  # elements: 8 of ATen's grains (32,768), a part for each of up to 8 intra-op threads
STATE_FILE = "trial_state.json"
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
    eval_step: float = math.nan  # the env step of the latest evaluation
    history: dict[str, list[float]] = field(default_factory=lambda: {key: [] for key in CURVE_KEYS})  # per report
    guard_strikes: int = 0
    guard_reason: StopReason | None = None
    stop_reason: StopReason | None = None
    stop_step: int | None = None
    wall_time_s: float = 0.0
    resumes: list[str] = field(default_factory=list)  # what each resume could restore
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
        if "history" not in data:
            data = _from_running_summary(data)
        return cls(**data)


def _from_running_summary(data: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint written before the trial kept its reported history held running figures: as a
    history they give the same summary (best and latest evaluation, Q extremes, last interval)."""
    low, high = data.pop("q_interval", None) or (math.nan, math.nan)
    best, max_q, min_q = data.pop("best_eval_return"), data.pop("max_actor_q"), data.pop("min_actor_q")
    history = {key: [] for key in CURVE_KEYS} | {
        m.EVAL_RETURN: [best, data["eval_return_mean"]],
        m.EVAL_RETURN_STD: [data["eval_return_std"]],
        m.ACTOR_Q_MAX: [max_q],
        m.ACTOR_Q_MIN: [min_q],
        m.Q_LOW: [low],
        m.Q_HIGH: [high],
    }
    return {**data, "history": history}


def configure_torch(threads: int) -> None:
    """PyTorch's CPU settings for training, in the thread that trains: ``threads`` intra-op threads,
    and subnormal floats flushed to zero.

    Why flush: the weights and Adam moments of hidden units that stop receiving gradient decay
    towards zero through the subnormal range (below 1.2e-38), where a CPU multiplies about fifty
    times slower. Measured on a ``critic_l2=0.01`` checkpoint of the default study after 3,500
    steps, where a quarter of each critic's 256x256 matrix was subnormal: one batch-256 forward
    through its layers took 36 ms, and 0.76 ms flushed; those trials ran 5x slower than their
    baseline. Flushing only changes values far below anything a float32 sum of weights can hold.

    The flag is per thread (the x86 control register), so the thread that trains sets it. PyTorch's
    intra-op threads copy it from that thread when they start: they start with its first parallel
    op, after this call, unless the thread ran one before (a script that trained, then calls
    ``run_trial``), when they keep the mode they had. That case gets a warning: it cannot be mended
    from here. A Ray trial runs in a thread of its own, and ``torch_threads`` 1 uses no such threads.
    """
    torch.set_num_threads(threads)
    if torch.set_flush_denormal(True) and threads > 1 and not _flushes_subnormals(PARALLEL_PROBE_SIZE):
        warnings.warn(
            f"subnormal floats are flushed in this thread but not in the {threads - 1} PyTorch intra-op "
            "threads it started before the trial, which keep their own float mode: a critic whose weights "
            "decay (critic_l2, weight decay) may train several times slower. Run the trial in a new "
            "thread or process (study.run does), or with torch_threads 1.",
            RuntimeWarning,
            stacklevel=2,
        )


def _flushes_subnormals(size: int = 1) -> bool:
    """Whether a product of subnormal floats comes out as zero here (over ``size`` elements: a
    tensor large enough is split across PyTorch's intra-op threads). The floats are made from their
    bits: ``torch.full(..., 1e-40)`` would convert the number in this thread, already flushing it."""
    subnormal = torch.full((size,), SUBNORMAL_BITS, dtype=torch.int32).view(torch.float32)
    return bool((subnormal * 1.0 == 0).all())


@contextmanager
def torch_for_training(threads: int) -> Iterator[None]:
    """``configure_torch`` for the body of the ``with``, then the calling thread's thread count and
    its own float mode as they were (a script that calls ``run_trial`` keeps its own). Intra-op
    threads that the body started keep flushing afterwards: their mode cannot be set from here."""
    threads_before, flushed_before = torch.get_num_threads(), _flushes_subnormals()
    configure_torch(threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads_before)
        torch.set_flush_denormal(flushed_before)


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
    optimizers, counters, RNG states, buffer), the trial's bookkeeping and the episode in flight
    continue from it, so that a resumed CPU run ends as the uninterrupted one would.
    With ``stop_on_guard=False`` the guard's metrics are still reported but the trial never stops
    itself: the Ray scheduler makes that decision for the whole study. ``between_episodes`` runs
    before every reset of the training env (the CARLA pool counts episodes there, and restarts or
    recycles its server). ``tensorboard=False`` leaves the events to the caller (a Ray study's
    driver writes them).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch_for_training(cfg.torch_threads):
        env = envs.make(cfg.env, cfg.env_settings)
        # Evaluation gets an env of its own, so it changes neither the training episode nor the training
        # env's random stream. A CARLA trial holds one server: it evaluates on the training env.
        shared_env = envs.needs_server(cfg.env)
        eval_env = env if shared_env else envs.make(cfg.env, cfg.env_settings)
        agent = TD3(env.observation_space, env.action_space, cfg.agent, device=cfg.device, seed=cfg.seed)
        declared_range = envs.declared_reward_range(env)
        state = TrialState()
        if resume_from is not None:
            agent.load(resume_from)
            state, episode, obs = resume_trial_files(Path(resume_from), agent, env, cfg, replayable=not shared_env)
        else:
            episode, obs = TrainingEpisode.begin(env, seed=cfg.seed)

        def end_episode() -> None:
            """Count the training episode that just ended (or was cut short), then start the next one."""
            nonlocal episode, obs
            count_episode(state, episode)
            if between_episodes is not None:
                between_episodes()
            episode, obs = TrainingEpisode.begin(env)

        writer = None
        if tensorboard:
            writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=agent.env_steps or None)
            writer.add_text("config", f"```\n{json.dumps(cfg.model_dump(mode='json'), indent=2)}\n```", agent.env_steps)
        bar = tqdm(total=cfg.steps, initial=agent.env_steps, disable=not progress, unit="step", dynamic_ncols=True)
        started = time.perf_counter()
        try:
            window = RateWindow.start(agent)
            while agent.env_steps < cfg.steps:
                obs, episode_over = env_step(agent, env, obs, episode)
                if episode_over:
                    end_episode()

                step = agent.env_steps
                last_step = step == cfg.steps
                report_due = step % cfg.report_every == 0 or last_step
                agent_metrics = agent.update(diagnostics=report_due)
                if not report_due:
                    continue

                rates = window.finish(agent)
                if step % cfg.eval_every == 0 or last_step:
                    if shared_env:
                        # The training episode ends here (its last transition already bootstraps, as a
                        # truncation should); every evaluation episode passes the between-episodes hook,
                        # and the training env's random stream continues as if evaluation had not run.
                        training_rng = rng_state(env)
                        record_eval(state, step, *evaluate(eval_env, agent, cfg.eval_episodes, cfg.seed, between_episodes))
                        set_rng_state(env, training_rng)
                        end_episode()
                    else:
                        record_eval(state, step, *evaluate(eval_env, agent, cfg.eval_episodes, cfg.seed))
                report, guard_stop = judged_report(state, agent, agent_metrics, rates, step, declared_range, cfg)
                stopping = guard_stop is not None and stop_on_guard
                if stopping:
                    state.stop_reason, state.stop_step = guard_stop, step

                state.wall_time_s += time.perf_counter() - started
                started = time.perf_counter()
                checkpoint = None
                if step % cfg.checkpoint_every == 0 or last_step or stopping:
                    checkpoint = save_checkpoint(out_dir / CHECKPOINT_DIR, agent, state, episode, obs, cfg.checkpoint_buffer)
                _log_tensorboard(writer, report, step)
                bar.update(step - bar.n)
                bar.set_postfix(_progress_postfix(report), refresh=False)
                if on_report is not None:
                    on_report(report, checkpoint)
                window = RateWindow.start(agent)
                if stopping:
                    break
        finally:
            bar.close()
            if writer is not None:
                writer.close()
            env.close()
            if eval_env is not env:
                eval_env.close()

        summary = trial_summary(state, agent, declared_range, cfg)
        (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        return summary


def env_step(agent: TD3, env: gym.Env, obs: Any, episode: TrainingEpisode) -> tuple[Any, bool]:
    """One training step of the env: act (exploring), step, store the transition and record it in
    the episode in flight; the next observation, and whether the episode ended there."""
    action = agent.act(obs, explore=True)
    next_obs, reward, terminated, truncated, _ = env.step(action)
    agent.observe(obs, action, float(reward), next_obs, terminated)
    episode.record(action, float(reward))
    return next_obs, terminated or truncated


def count_episode(state: TrialState, episode: TrainingEpisode) -> None:
    """Count a training episode that ended or was cut short. One with no step yet (it began on
    this step, and an evaluation on a shared env cut it) is not counted again."""
    if episode.length > 0:
        state.recent_returns.append(episode.episode_return)
        state.recent_lengths.append(episode.length)
        state.episodes += 1


def judged_report(
    state: TrialState,
    agent: TD3,
    agent_metrics: dict[str, float],
    rates: dict[str, float],
    step: int,
    declared_range: tuple[float, float] | None,
    cfg: TrialConfig,
) -> tuple[dict[str, float], StopReason | None]:
    """This step's report (after its evaluation, if one was due), judged by the trial's guard, its
    curves kept in the trial's history; and the stop the guard calls for, if any."""
    report = _build_report(state, agent_metrics, rates, step)
    interval = q_interval(declared_range, agent.reward_range_seen, cfg.agent.gamma, cfg.agent.reward_clip)
    # The agent reports no actor-path Q before its first actor step, nor on a step with no
    # update (a resumed buffer-less checkpoint refilling): nothing to judge then.
    guard_stop = _apply_guard(state, report, interval, m.ACTOR_Q_MAX in agent_metrics, cfg)
    for key, series in state.history.items():
        series.append(report[key])
    return report, guard_stop


def evaluate(
    env: gym.Env, agent: TD3, episodes: int, seed: int, before_reset: Callable[[], None] | None = None
) -> tuple[float, float]:
    """Mean and std of the deterministic policy's return over ``episodes`` seeded episodes.

    The seeds are the same at every evaluation and in every arm of a study, so that returns compare
    across checkpoints and configurations. ``before_reset`` runs before each episode's reset.
    """
    returns = []
    for episode in range(episodes):
        if before_reset is not None:
            before_reset()
        obs, _ = env.reset(seed=EVAL_SEED_OFFSET + seed * 1_000 + episode)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs, explore=False))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns)), float(np.std(returns))


@dataclass
class RateWindow:
    """Env steps and updates per second of training time (evaluation and I/O excluded)."""

    time: float
    env_steps: int
    updates: int

    @classmethod
    def start(cls, agent: TD3) -> RateWindow:
        return cls(time.perf_counter(), agent.env_steps, agent.updates)

    def finish(self, agent: TD3) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.time, 1e-9)
        return {
            m.ENV_STEPS_PER_S: (agent.env_steps - self.env_steps) / elapsed,
            m.UPDATES_PER_S: (agent.updates - self.updates) / elapsed,
        }


def record_eval(state: TrialState, step: int, mean: float, std: float) -> None:
    state.eval_step, state.eval_return_mean, state.eval_return_std = step, mean, std


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
        m.EPISODE_RETURN: state.episode_return,
        m.EPISODE_LENGTH: state.episode_length,
        m.EVAL_RETURN: state.eval_return_mean,
        m.EVAL_RETURN_STD: state.eval_return_std,
        m.EVAL_STEP: state.eval_step,
    }
    return m.complete_report(values)


def _apply_guard(
    state: TrialState,
    report: dict[str, float],
    interval: tuple[float, float] | None,
    actor_q_measured: bool,
    cfg: TrialConfig,
) -> StopReason | None:
    """Fill the guard's metrics into the report, advance the guard, and return its stop verdict.

    ``actor_q_measured`` is False until the agent's first actor step: such a report has nothing
    to judge (its excess stays NaN, which neither offends nor clears), while a non-finite Q after
    it is judged as ``non_finite``. The strike count goes into the report and the checkpoint, so
    the Ray scheduler judges each report by the trial's own count, also after a retry or resume.
    """
    q_max, q_min = report[m.ACTOR_Q_MAX], report[m.ACTOR_Q_MIN]
    buffer_q = report[m.Q1_VALUE]
    if buffer_q and math.isfinite(buffer_q):
        report[m.ACTOR_TO_BUFFER_Q] = report[m.ACTOR_Q_MEAN] / buffer_q
    if interval is not None:
        report[m.Q_LOW], report[m.Q_HIGH] = interval
        if actor_q_measured:
            report[m.GUARD_EXCESS] = actor_q_excess(q_max, q_min, interval)
    state.guard, verdict = guard_step(state.guard, report[m.GUARD_EXCESS], cfg.guard)
    report[m.GUARD_STRIKES] = state.guard_strikes
    return verdict


def save_checkpoint(
    link: Path, agent: TD3, state: TrialState, episode: TrainingEpisode, obs: Any, include_buffer: bool
) -> Path:
    """Write a complete checkpoint of the trial (``write_checkpoint``); return its folder."""

    def write(folder: Path) -> None:
        agent.save(folder, include_buffer=include_buffer)
        save_trial_files(folder, state, episode, obs)

    return write_checkpoint(link, agent.env_steps, write)


def save_trial_files(folder: Path, state: TrialState, episode: TrainingEpisode, obs: Any) -> None:
    """What a checkpoint holds beside the agent: the trial's bookkeeping and the episode in flight."""
    state.save(folder / STATE_FILE)
    episode.save(folder, obs)


def resume_trial_files(
    folder: Path, agent: TD3, env: gym.Env, cfg: TrialConfig, *, replayable: bool
) -> tuple[TrialState, TrainingEpisode, Any]:
    """The trial's bookkeeping and its episode in flight from a checkpoint (``save_trial_files``),
    its agent loaded already; the episode is replayed on ``env`` where it can be, and the trial's
    summary says whether it was (``resumes``). Returns them and the current observation."""
    state = TrialState.load(folder / STATE_FILE)
    if math.isnan(state.eval_step) and math.isfinite(state.eval_return_mean):  # saved before eval_step was
        state.eval_step = agent.env_steps // cfg.eval_every * cfg.eval_every
    episode, obs, note = resume_episode(env, folder, replayable=replayable, seed=cfg.seed + agent.env_steps)
    state.resumes.append(f"at {agent.env_steps} env steps: {note}")
    return state, episode, obs


def write_checkpoint(link: Path, env_steps: int, write: Callable[[Path], None]) -> Path:
    """Write a complete checkpoint into a new folder (``write`` fills it), then point ``link`` at
    it; return the folder.

    The link is replaced by one rename, so at every moment it names a complete checkpoint: a kill
    while writing loses at most the work since the previous one. Folders live beside the link in
    ``<link>s/`` and older ones are removed once the link has moved on.
    """
    folders = link.with_name(link.name + "s")
    folders.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"step-{env_steps:09d}-", dir=folders))
    write(folder)
    staged = link.with_name(link.name + ".next")
    staged.unlink(missing_ok=True)
    staged.symlink_to(folder.relative_to(link.parent))  # relative: the output folder may move
    if link.is_dir() and not link.is_symlink():  # a checkpoint folder written by an older version
        shutil.rmtree(folders / "legacy", ignore_errors=True)
        os.replace(link, folders / "legacy")
    os.replace(staged, link)
    for old in folders.iterdir():
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def _log_tensorboard(writer: SummaryWriter | None, report: dict[str, float], step: int) -> None:
    if writer is None:
        return
    for key, value in m.tensorboard_scalars(report).items():
        writer.add_scalar(key, value, step)


def _progress_postfix(report: dict[str, float]) -> dict[str, str]:
    return {
        "return": f"{report[m.EPISODE_RETURN]:.1f}",
        "eval": f"{report[m.EVAL_RETURN]:.1f}",
        "actor_q_max": f"{report[m.ACTOR_Q_MAX]:.3g}",
        "q_high": f"{report[m.Q_HIGH]:.3g}",
    }


def trial_summary(
    state: TrialState, agent: TD3, declared_range: tuple[float, float] | None, cfg: TrialConfig
) -> dict[str, Any]:
    """summary.json: the trial's ``TrialSummary`` (the results contract's), and what else it knows."""
    completed = state.stop_reason is None and agent.env_steps >= cfg.steps
    figures = summarize(
        state.history,
        env_steps=agent.env_steps,
        stop_reason="completed" if completed else state.stop_reason,
        stop_step=agent.env_steps if completed else state.stop_step,  # as the scheduler records it
    )
    seen_range = agent.reward_range_seen
    return {
        "env": cfg.env,
        "seed": cfg.seed,
        **figures.as_json(),
        "reward_range_declared": list(declared_range) if declared_range else None,
        "reward_range_seen": list(seen_range) if seen_range else None,
        "episodes": state.episodes,
        "resumes": state.resumes,
        "wall_time_s": round(state.wall_time_s, 3),
        "config": cfg.model_dump(mode="json"),
    }
