"""An arm's seeds as one population in one process: P envs stepped together, one learning step for
all members (``agents.population``), and for each member its own reports and actor-path Q guard.

The loop is ``study.trial.run_trial``'s, for P members at once: every env step each learning member
acts, steps its own env and stores the transition, then all members learn in one step; every
``report_every`` env steps each member's metrics are gathered and judged by its own guard
(``study.guard``, the rule a single trial applies). A member the guard stops is frozen (it learns and
acts no more, its parameters stay as they were) and filed with its outcome and step, while the
others go on. Evaluation, checkpoints and TensorBoard are not here yet: a member's reports carry
the agent's and the guard's metrics and its training episodes' returns.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import envs
from agents.population import TD3Population
from study import metrics as m
from study.config import TrialConfig
from study.guard import GuardState, StopReason, actor_q_excess, guard_step, q_interval
from study.trial import torch_for_training

OnMemberReport = Callable[[int, dict[str, float]], None]  # (member's seed, its report)


@dataclass
class MemberRun:
    """One member's trial bookkeeping: its env, episode in flight, guard, outcome and reports."""

    seed: int
    env: Any
    obs: Any
    episode_return: float = 0.0
    episode_length: int = 0
    finished_returns: list[float] = field(default_factory=list)  # episodes ended since the last report
    finished_lengths: list[int] = field(default_factory=list)
    last_return: float = math.nan
    last_length: float = math.nan
    guard: GuardState = field(default_factory=GuardState)
    stop_reason: StopReason | None = None
    stop_step: int | None = None
    env_steps: int = 0
    reports: list[dict[str, float]] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """``completed``, or why the guard stopped the member (``q_explosion``, ``non_finite``)."""
        return self.stop_reason or "completed"


_BUILDING = threading.Lock()  # one population built at a time: see _run


def run_population(
    cfg: TrialConfig,
    seeds: Sequence[int],
    *,
    threads: int = 1,
    stop_on_guard: bool = True,
    on_report: OnMemberReport | None = None,
) -> list[MemberRun]:
    """Train one TD3 member per seed of ``cfg`` (``cfg.seed`` is ignored) for ``cfg.steps`` env
    steps each, or until its guard stops it; return every member's run, in the order of ``seeds``.

    ``threads`` > 1 deals the seeds round-robin into that many populations, each running this loop
    in a thread of its own (PyTorch's kernels release the GIL), so that one process uses that many
    cores. They share nothing and never wait for each other (no barrier each step, so a thread the
    OS holds back delays only its own members); a member's results are the same in any of them.
    ``stop_on_guard=False`` reports the guard's metrics but freezes no member. ``on_report`` is
    called with each member's seed and report, from one thread at a time.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    groups = [list(range(k, len(seeds), threads)) for k in range(min(threads, len(seeds)))]
    if len(groups) == 1:
        return _run(cfg, seeds, stop_on_guard, on_report)
    lock = threading.Lock()

    def report(seed: int, values: dict[str, float]) -> None:
        with lock:
            on_report(seed, values)  # type: ignore[misc]

    with ThreadPoolExecutor(len(groups), thread_name_prefix="population") as pool:
        done = pool.map(
            lambda group: _run(cfg, [seeds[i] for i in group], stop_on_guard, None if on_report is None else report),
            groups,
        )
        runs: dict[int, MemberRun] = {}
        for group, group_runs in zip(groups, done, strict=True):
            runs.update(zip(group, group_runs, strict=True))
    return [runs[i] for i in range(len(seeds))]


def _run(
    cfg: TrialConfig, seeds: Sequence[int], stop_on_guard: bool, on_report: OnMemberReport | None
) -> list[MemberRun]:
    """One population's loop (see ``run_population``), in the thread that runs it, which gets back
    its own torch settings after (``run_population(threads=1)`` runs it in the caller's)."""
    with torch_for_training(cfg.torch_threads):
        member_envs = [envs.make(cfg.env, cfg.env_settings) for _ in seeds]
        declared_range = envs.declared_reward_range(member_envs[0])
        with _BUILDING:  # members draw their initial weights from torch's global generator, seeded per member
            population = TD3Population(member_envs[0].observation_space, member_envs[0].action_space, cfg.agent, seeds, cfg.device)
        runs = [MemberRun(seed, env, env.reset(seed=seed)[0]) for seed, env in zip(seeds, member_envs, strict=True)]
        try:
            for step in range(1, cfg.steps + 1):
                for i in population.active:
                    _env_step(population.members[i], runs[i])
                report_due = step % cfg.report_every == 0 or step == cfg.steps
                metrics = population.update(diagnostics=report_due)
                if not report_due:
                    continue
                for i in list(population.active):
                    run, agent = runs[i], population.members[i]
                    interval = q_interval(declared_range, agent.reward_range_seen, cfg.agent.gamma, cfg.agent.reward_clip)
                    report = _report(run, metrics.get(i, {}), step, interval)
                    verdict = _guard(run, report, m.ACTOR_Q_MAX in metrics.get(i, {}), cfg)
                    run.reports.append(report)
                    if on_report is not None:
                        on_report(run.seed, report)
                    if verdict is not None and stop_on_guard:
                        run.stop_reason, run.stop_step = verdict, step
                        population.freeze(i)
                if not population.active:
                    break
        finally:
            for env in member_envs:
                env.close()
        for run, agent in zip(runs, population.members, strict=True):
            run.env_steps = agent.env_steps
        return runs


def _env_step(agent: Any, run: MemberRun) -> None:
    """One env step of one member: act, step, store; a new episode when this one ends."""
    action = agent.act(run.obs, explore=True)
    next_obs, reward, terminated, truncated, _ = run.env.step(action)
    agent.observe(run.obs, action, float(reward), next_obs, terminated)
    run.episode_return += float(reward)
    run.episode_length += 1
    run.obs = next_obs
    if terminated or truncated:
        run.finished_returns.append(run.episode_return)
        run.finished_lengths.append(run.episode_length)
        run.episode_return, run.episode_length = 0.0, 0
        run.obs, _ = run.env.reset()  # the env's own generator continues, as in a single trial


def _report(
    run: MemberRun,
    agent_metrics: dict[str, float],
    step: int,
    interval: tuple[float, float] | None,
) -> dict[str, float]:
    """This member's report: the agent's metrics, its training episodes since the last report (or
    the last ones), and the guard's interval; every report key present (``study.metrics``)."""
    if run.finished_returns:
        run.last_return = float(np.mean(run.finished_returns))
        run.last_length = float(np.mean(run.finished_lengths))
        run.finished_returns.clear()
        run.finished_lengths.clear()
    values = {**agent_metrics, m.ENV_STEPS: step, m.EPISODE_RETURN: run.last_return, m.EPISODE_LENGTH: run.last_length}
    if interval is not None:
        values[m.Q_LOW], values[m.Q_HIGH] = interval
    return m.complete_report(values)


def _guard(run: MemberRun, report: dict[str, float], actor_q_measured: bool, cfg: TrialConfig) -> StopReason | None:
    """Judge the member's report with its guard (``study.guard``, as ``run_trial`` does); fill the
    guard's metrics into the report and return the stop it calls for, if any."""
    if actor_q_measured and math.isfinite(report[m.Q_LOW]):
        report[m.GUARD_EXCESS] = actor_q_excess(report[m.ACTOR_Q_MAX], report[m.ACTOR_Q_MIN], (report[m.Q_LOW], report[m.Q_HIGH]))
    buffer_q = report[m.Q1_VALUE]
    if buffer_q and math.isfinite(buffer_q):
        report[m.ACTOR_TO_BUFFER_Q] = report[m.ACTOR_Q_MEAN] / buffer_q
    run.guard, verdict = guard_step(run.guard, report[m.GUARD_EXCESS], cfg.guard)
    report[m.GUARD_STRIKES] = run.guard.strikes
    return verdict
