"""An arm's seeds as one population in one process: P envs stepped together, one learning step for
all members (``agents.population``), and for each member what its single trial would do.

The loop is ``study.trial.run_trial``'s, for P members at once, and calls its functions: every env
step each learning member acts, steps its own env and stores the transition, then all members learn
in one step; every ``report_every`` env steps each member is evaluated when due (the same seeds and
episodes as its single trial, on an env of the population's own), and its report is judged by its
own guard (``study.guard``, the rule a single trial applies). A member the guard stops is frozen (it
learns, acts and reports no more, its parameters stay as they were) and filed with its outcome and
step, while the others go on. Every ``checkpoint_every`` env steps one checkpoint holds the whole
population, written as a single trial's is (a new folder swapped in by one rename): the shared
optimizers and which members still learn, and per member its agent, bookkeeping and episode in
flight, so that a killed and resumed population ends as the uninterrupted one. TensorBoard is the Ray
driver's (``study.tensorboard_logging``), as for a single trial in a study.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

import envs
from agents.population import TD3Population, member_dir
from study.config import TrialConfig
from study.episode import TrainingEpisode
from study.guard import StopReason
from study.trial import (
    CHECKPOINT_DIR,
    RateWindow,
    TrialState,
    count_episode,
    env_step,
    evaluate,
    judged_report,
    record_eval,
    resume_trial_files,
    save_trial_files,
    torch_for_training,
    trial_summary,
    write_checkpoint,
)

# The reports of the members that reported at one env step ({seed: report}, in seed order), and the
# checkpoint written at that step, if one was.
OnReports = Callable[[dict[int, dict[str, float]], Path | None], None]


@dataclass
class MemberRun:
    """One member's trial: its config (its seed), env and episode in flight, its bookkeeping
    (``TrialState``: evaluations, guard, outcome, reported history), the reports it made in this
    run (after a resume: since the checkpoint) and, once the population is done, its summary."""

    cfg: TrialConfig
    env: gym.Env
    episode: TrainingEpisode
    obs: Any
    state: TrialState = field(default_factory=TrialState)
    reports: list[dict[str, float]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)  # ``study.trial.trial_summary``, as summary.json

    @property
    def seed(self) -> int:
        return self.cfg.seed


_BUILDING = threading.Lock()  # one population built at a time: see _run


def run_population(
    cfg: TrialConfig,
    seeds: Sequence[int],
    *,
    threads: int = 1,
    stop_on_guard: bool = True,
    on_report: OnReports | None = None,
    out_dir: Path | None = None,
    resume_from: Path | None = None,
) -> list[MemberRun]:
    """Train one TD3 member per seed of ``cfg`` (``cfg.seed`` is ignored) for ``cfg.steps`` env
    steps each, or until its guard stops it; return every member's run, in the order of ``seeds``.

    ``out_dir`` gets the population's checkpoints (``<out_dir>/checkpoint``); ``resume_from`` is one
    of them, from which the population continues exactly. ``threads`` > 1 deals the seeds
    round-robin into that many populations, each running this loop in a thread of its own (PyTorch's
    kernels release the GIL), so that one process uses that many cores. They share nothing and never
    wait for each other (no barrier each step, so a thread the OS holds back delays only its own
    members), which is why they take no checkpoint: one holds a whole population at one step. A
    member's results are the same in any of them. ``stop_on_guard=False`` reports the guard's metrics
    but freezes no member. ``on_report`` is called at every report step, from one thread at a time.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if envs.needs_server(cfg.env):
        raise ValueError(f"a population steps an env per member, and env {cfg.env!r} needs a server per env")
    groups = [list(range(k, len(seeds), threads)) for k in range(min(threads, len(seeds)))]
    if len(groups) == 1:
        return _run(cfg, seeds, stop_on_guard, on_report, out_dir, resume_from)
    if out_dir is not None or resume_from is not None:
        raise ValueError("checkpoints hold a whole population at one step: they need threads=1")
    lock = threading.Lock()

    def report(reports: dict[int, dict[str, float]], checkpoint: Path | None) -> None:
        with lock:
            on_report(reports, checkpoint)  # type: ignore[misc]

    with ThreadPoolExecutor(len(groups), thread_name_prefix="population") as pool:
        done = pool.map(
            lambda group: _run(cfg, [seeds[i] for i in group], stop_on_guard, None if on_report is None else report, None, None),
            groups,
        )
        runs: dict[int, MemberRun] = {}
        for group, group_runs in zip(groups, done, strict=True):
            runs.update(zip(group, group_runs, strict=True))
    return [runs[i] for i in range(len(seeds))]


def _run(
    cfg: TrialConfig,
    seeds: Sequence[int],
    stop_on_guard: bool,
    on_report: OnReports | None,
    out_dir: Path | None,
    resume_from: Path | None,
) -> list[MemberRun]:
    """One population's loop (see ``run_population``), in the thread that runs it, which gets back
    its own torch settings after (``run_population(threads=1)`` runs it in the caller's)."""
    with torch_for_training(cfg.torch_threads):
        member_envs = [envs.make(cfg.env, cfg.env_settings) for _ in seeds]
        eval_env = envs.make(cfg.env, cfg.env_settings)  # every evaluation episode is seeded: one env serves all members
        declared_range = envs.declared_reward_range(member_envs[0])
        with _BUILDING:  # members draw their initial weights from torch's global generator, seeded per member
            population = TD3Population(member_envs[0].observation_space, member_envs[0].action_space, cfg.agent, seeds, cfg.device)
        member_cfgs = [cfg.model_copy(update={"seed": seed}) for seed in seeds]
        try:
            runs = _start(population, member_cfgs, member_envs, resume_from)
            done = population.members[population.active[0]].env_steps if population.active else cfg.steps
            windows = [RateWindow.start(agent) for agent in population.members]
            started = time.perf_counter()
            for step in range(done + 1, cfg.steps + 1):
                for i in population.active:
                    _member_step(population.members[i], runs[i])
                report_due = step % cfg.report_every == 0 or step == cfg.steps
                metrics = population.update(diagnostics=report_due)
                if not report_due:
                    continue
                reporting = list(population.active)
                rates = {i: windows[i].finish(population.members[i]) for i in reporting}
                reports, froze = {}, False
                for i in reporting:
                    run, agent = runs[i], population.members[i]
                    report, verdict = _member_report(run, agent, metrics.get(i, {}), rates[i], step, declared_range, eval_env)
                    run.reports.append(report)
                    reports[run.seed] = report
                    if verdict is not None and stop_on_guard:
                        run.state.stop_reason, run.state.stop_step = verdict, step
                        population.freeze(i)
                        froze = True
                elapsed, started = time.perf_counter() - started, time.perf_counter()
                for i in reporting:
                    runs[i].state.wall_time_s += elapsed
                checkpoint = None
                # As a single trial checkpoints its guard stop: a retry then never replays a member's stop.
                if out_dir is not None and (step % cfg.checkpoint_every == 0 or step == cfg.steps or froze):
                    checkpoint = _save_checkpoint(out_dir / CHECKPOINT_DIR, population, runs, step, cfg.checkpoint_buffer)
                if on_report is not None:
                    on_report(reports, checkpoint)
                windows = [RateWindow.start(agent) for agent in population.members]
                if not population.active:
                    break
        finally:
            for env in [*member_envs, eval_env]:
                env.close()
        for run, agent in zip(runs, population.members, strict=True):
            run.summary = trial_summary(run.state, agent, declared_range, run.cfg)
        return runs


def _start(
    population: TD3Population, cfgs: Sequence[TrialConfig], member_envs: Sequence[gym.Env], resume_from: Path | None
) -> list[MemberRun]:
    """Every member's run at its first step, or where a population checkpoint (``_save_checkpoint``)
    left it: the population loaded, and per member its bookkeeping and its episode replayed."""
    if resume_from is None:
        return [MemberRun(c, env, *TrainingEpisode.begin(env, seed=c.seed)) for c, env in zip(cfgs, member_envs, strict=True)]
    population.load(resume_from)
    runs = []
    for c, env, agent in zip(cfgs, member_envs, population.members, strict=True):
        state, episode, obs = resume_trial_files(member_dir(resume_from, c.seed), agent, env, c, replayable=True)
        runs.append(MemberRun(c, env, episode, obs, state))
    return runs


def _member_step(agent: Any, run: MemberRun) -> None:
    """One env step of one member (``study.trial.env_step``); a new episode when this one ends."""
    run.obs, episode_over = env_step(agent, run.env, run.obs, run.episode)
    if episode_over:
        count_episode(run.state, run.episode)
        run.episode, run.obs = TrainingEpisode.begin(run.env)  # the env's own generator continues, as in a single trial


def _member_report(
    run: MemberRun,
    agent: Any,
    agent_metrics: dict[str, float],
    rates: dict[str, float],
    step: int,
    declared_range: tuple[float, float] | None,
    eval_env: gym.Env,
) -> tuple[dict[str, float], StopReason | None]:
    """The member's report at a report step, as its single trial makes it: evaluated when due, then
    judged by its guard (``study.trial.judged_report``); and the stop its guard calls for."""
    if step % run.cfg.eval_every == 0 or step == run.cfg.steps:
        record_eval(run.state, step, *evaluate(eval_env, agent, run.cfg.eval_episodes, run.seed))
    return judged_report(run.state, agent, agent_metrics, rates, step, declared_range, run.cfg)


def _save_checkpoint(link: Path, population: TD3Population, runs: Sequence[MemberRun], step: int, include_buffer: bool) -> Path:
    """One checkpoint of the whole population (``study.trial.write_checkpoint``): the population
    (``TD3Population.save``), and beside each member's agent its trial files (bookkeeping and
    guard, the episode in flight), frozen members included; returns its folder."""

    def write(folder: Path) -> None:
        population.save(folder, include_buffer=include_buffer)
        for run in runs:
            save_trial_files(member_dir(folder, run.seed), run.state, run.episode, run.obs)

    return write_checkpoint(link, step, write)
