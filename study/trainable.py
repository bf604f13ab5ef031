"""One Ray Tune trial: lease a CARLA slot when the env needs one, then run ``study.trial.run_trial``
(or, for ``execution: population``, an arm's seeds together: ``study.population.run_population``).

The trial function is the same one ``python -m study.train`` runs; this wrapper only connects it
to Tune: every report (every key of ``study.metrics.REPORT_KEYS``, plus ``arm`` and ``seed``) goes
to ``tune.report`` with the checkpoint written at that report, a retried or resumed trial starts
from ``tune.get_checkpoint()``, and the guard's stop is left to the study's scheduler
(``stop_on_guard=False``), which stops the trial and records why. A population cannot be stopped
for one member: it freezes a runaway member itself, by the same rule (``study.guard``) applied to
the same report, and the scheduler records that member's outcome from it.

CARLA: a trial on env ``carla`` asks Ray for one ``carla`` resource (cluster.yaml's GPU nodes
advertise their slots), then leases a server slot on its node from ``envs.carla.pool``: a port
block held by a lock no other trial on that node can take, and a server bound to the GPU Ray gave
the trial. Between episodes the slot counts the episode (recycling a leaking server when due) and
restarts a server that died or hangs; a server that dies mid-episode makes the trial fail, and Tune
retries it from its last checkpoint with a fresh lease. The embedded simulator and gymnasium envs
need none of this (nor the CARLA wheel).

A population trial reports each member's report as its own Tune result (every one names its seed)
and the population's checkpoint with the last member's report of that step; the driver's callbacks
file each member as the single trial of its seed would be (``study.plan.member_id``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import ray
from ray import tune

from envs import needs_server
from study import metrics as m
from study import results as r
from study.plan import POPULATION, members_of
from study.population import run_population
from study.spec import StudySpec
from study.trial import run_trial

# How long a reused process waits for its previous trial to wind down (TUNE_FUNCTION_THREAD_TIMEOUT_S).
WIND_DOWN_S = 300


class InjectedFault(RuntimeError):
    """Raised by ``fault_injection`` (tests only) to exercise Tune's retry from a checkpoint."""


def trial_resources(spec: StudySpec) -> dict[str, float]:
    """What one trial asks Ray for: CPUs, a GPU fraction, and a CARLA slot when it needs one."""
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    if spec.resources.carla:
        resources["carla"] = float(spec.resources.carla)
    return resources


def make_trainable(spec: StudySpec) -> Callable[[dict[str, Any]], None]:
    """The study's Tune function trainable, with its per-trial resources attached."""

    def td3_trial(config: dict[str, Any]) -> None:
        # Ray logs every persisted checkpoint at INFO, from every trial: keep warnings only.
        logging.getLogger("ray.train").setLevel(logging.WARNING)
        allow_wind_down()
        sys.unraisablehook = exit_in_finalizer_is_no_error
        plans = members_of(spec, config)
        checkpoint = tune.get_checkpoint()
        resumed = checkpoint is not None
        fail_at = spec.fault_injection.fail_at_step if spec.fault_injection else None

        def on_reports(reports: dict[int, dict[str, float]], checkpoint_dir: Path | None) -> None:
            """One env step's reports ({seed: report}) to Tune, each naming its arm and seed; the
            checkpoint written at that step goes with the last, so that it holds every report."""
            step = next(iter(reports.values()))[m.ENV_STEPS]
            if fail_at is not None and not resumed and step >= fail_at:
                raise InjectedFault(f"fault_injection: first attempt fails at env step {int(step)}")
            saved = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
            seeds = list(reports)
            for seed in seeds:
                tune.report({**reports[seed], r.ARM: plans[0].arm, r.SEED: seed}, checkpoint=saved if seed == seeds[-1] else None)

        with carla_slot(spec) as (slot_settings, between_episodes):
            cfg = plans[0].config
            cfg = cfg.model_copy(update={"env_settings": {**cfg.env_settings, **slot_settings}})
            with checkpoint.as_directory() if checkpoint else nullcontext(None) as resume_dir:
                resume_from = Path(resume_dir) if resume_dir else None
                # Tune runs each trial in its own working directory, which is not synced to storage:
                # the scratch checkpoint goes there (Tune copies each reported one to storage), and
                # the study's driver writes the TensorBoard events into the trial's storage folder.
                # Taken here, once: a stopped trial winds down after Tune has moved this process
                # into the next trial's directory, so nothing below may use a relative path.
                if POPULATION in config:
                    # A member's guard stop freezes it here (Tune can only stop the whole trial); the
                    # scheduler records the outcome by the same rule from its report.
                    seeds = [plan.seed for plan in plans]
                    run_population(cfg, seeds, on_report=on_reports, out_dir=Path.cwd(), resume_from=resume_from)
                    return
                run_trial(
                    cfg,
                    Path.cwd(),
                    on_report=lambda report, checkpoint_dir: on_reports({cfg.seed: report}, checkpoint_dir),
                    resume_from=resume_from,
                    progress=False,
                    stop_on_guard=False,
                    between_episodes=between_episodes,
                    tensorboard=False,
                )

    return tune.with_resources(td3_trial, trial_resources(spec))


def allow_wind_down() -> None:
    """Give a stopped trial ``WIND_DOWN_S`` to end before this process runs the next trial.

    study.run has Tune reuse a trial's process for the next trial (``reuse_actors``). A trial the
    scheduler stopped (the guard, ASHA) is left waiting in ``tune.report`` and winds down (closes
    its env; its output goes to the next trial's log) only then. Tune waits
    ``TUNE_FUNCTION_THREAD_TIMEOUT_S`` seconds for that (2 by default), read in this process at
    each reuse; past it, Ray 2.60 fails the next trial without a retry or telling the scheduler and
    callbacks, and a study with ``max_concurrent_trials`` loses that slot for good (it can stall).
    Waiting costs only time. Called by each trial, before any reuse of its process.
    """
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", str(WIND_DOWN_S))


def exit_in_finalizer_is_no_error(unraisable: Any) -> None:
    """``sys.unraisablehook`` of a trial's process: a ``SystemExit`` raised inside a finalizer ends
    silently; anything else is printed as Python prints it.

    Tune ends a trial's process (at the study's end; after each trial where it does not reuse
    processes) by removing its placement group, and the raylet then sends the worker process
    SIGTERM, which Ray's handler turns into ``SystemExit`` in the main thread, wherever that thread
    is. When it is running a finalizer (a weakref callback or ``__del__`` the garbage collector
    called), Python cannot raise there and prints "Exception ignored in ... SystemExit: 1" with a
    traceback, which Ray forwards to the study's console: a traceback at the end of a trial in which
    nothing went wrong, the process ending as it was told to.
    """
    if isinstance(unraisable.exc_value, SystemExit):
        return
    sys.__unraisablehook__(unraisable)


@contextmanager
def carla_slot(spec: StudySpec) -> Iterator[tuple[dict[str, Any], Callable[[], None] | None]]:
    """The env settings that point a CARLA env at this trial's leased server, and what to run
    between its episodes: count the episode (the pool recycles a leaking server when due) and
    restart a server that died or hangs, so the next reset reconnects instead of the trial failing.
    ({} and None for envs that need no server.)
    """
    if not needs_server(spec.env):
        yield {}, None
        return
    from envs.carla.pool import CarlaPool
    from envs.carla.pool_config import CarlaPoolConfig

    gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []  # the GPU Ray gave this trial
    pool = CarlaPool(CarlaPoolConfig.model_validate(spec.carla_pool))
    with pool.lease(int(gpu_ids[0]) if gpu_ids else None) as slot:

        def between_episodes() -> None:
            slot.episode_done()
            slot.ensure_alive()

        yield {"host": slot.host, "port": slot.port, "tm_port": slot.tm_port}, between_episodes
