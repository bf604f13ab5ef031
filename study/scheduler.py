"""One Tune scheduler for a study: ASHA on return, overruled by the actor-path Q guard.

ASHA ranks trials on ``eval/return_mean`` at rungs over ``env_steps``. It cannot see a critic that
is running away: Q can leave the interval of possible returns long before the return drops, and
ASHA lets a NaN metric pass its rungs. So every report first goes through the pure guard rule
(``study.guard.verdict`` on the trial's own strike count); a trial whose actor-path Q stays
outside the interval (or turns non-finite) for ``patience`` reports is stopped at once, whatever
ASHA thinks. A population trial (``execution: population``, no ASHA) is never stopped for one
member: the population freezes the member by the same rule, and the scheduler records the member's
outcome under its id (``study.plan.member_id``).

Tune keeps no reason for a stop, and a diverged trial must never be filed as merely pruned, so the
scheduler records each decision (``q_explosion``, ``non_finite``, ``asha``, ``completed``) with its
step, and ``StopReasonCallback`` writes it into the trial's last result, which Tune's loggers
(``result.json``) and the MLflow callback then carry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from study import metrics as m
from study.guard import GUARD_STOPS, GuardConfig, verdict
from study.plan import POPULATION, member_id, planned_steps
from study.results import SEED, STOP_REASON, STOP_STEP

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

Outcome = Literal["completed", "asha", "q_explosion", "non_finite", "error"]


@dataclass(frozen=True)
class StopRecord:
    reason: Outcome
    step: int


class QGuardScheduler(FIFOScheduler):
    """The actor-path Q guard, with ASHA behind it when the study turns ASHA on; remembers why and
    when each trial stopped. (Tune's start-up box names a scheduler by its class: this one's name
    holds with ASHA on or off.)"""

    def __init__(
        self,
        guard: GuardConfig,
        *,
        max_t: int,
        asha: bool = True,
        grace_period: int = 1,
        reduction_factor: float = 3.0,
    ) -> None:
        super().__init__()
        self._guard_cfg = guard
        self._max_t = max_t
        # One bracket: with a handful of arms, more brackets only thin out each rung's ranking.
        self._asha = (
            AsyncHyperBandScheduler(
                time_attr=m.ENV_STEPS,
                max_t=max_t,
                grace_period=grace_period,
                reduction_factor=reduction_factor,
                brackets=1,
            )
            if asha
            else None
        )
        self._stops: dict[str, StopRecord] = {}
        self._metric: str | None = None

    @property
    def max_t(self) -> int:
        return self._max_t

    def stop_record(self, trial_id: str) -> StopRecord | None:
        """Why and when the scheduler stopped this trial (a population member: ``study.plan.member_id``), if it did."""
        return self._stops.get(trial_id)

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        self._metric = metric
        return self._asha.set_search_properties(metric, mode, **spec) if self._asha else True

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        if self._asha:
            self._asha.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict) -> str:
        step = int(result[m.ENV_STEPS])
        # The trial counts the strikes (and checkpoints them): a retry re-reports the steps after
        # its checkpoint with the count it had there, and a resumed study reads the count on.
        reason = verdict(int(result[m.GUARD_STRIKES]), float(result[m.GUARD_EXCESS]), self._guard_cfg)
        if POPULATION in trial.config:
            # A member's report: the population froze the member by this same rule, and its report
            # at the stop is its last. Tune stops whole trials only, so the others go on; a retry's
            # replay of a report before the stop clears the record until the stop comes again.
            member = member_id(trial.trial_id, trial.config, result[SEED])
            if reason is not None:
                self._stops[member] = StopRecord(reason, step)
            else:
                self._stops.pop(member, None)
            return TrialScheduler.CONTINUE
        if reason is not None:
            self._stops[trial.trial_id] = StopRecord(reason, step)
            return TrialScheduler.STOP
        if self._asha is None:
            return TrialScheduler.CONTINUE
        decision = self._asha.on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            self._stops[trial.trial_id] = StopRecord("completed" if step >= self._max_t else "asha", step)
        return decision

    def on_trial_complete(self, tune_controller: TuneController, trial: Trial, result: dict) -> None:
        if not self._asha:
            return
        record = self._stops.get(trial.trial_id)
        if record is not None and record.reason in GUARD_STOPS:
            # A diverged trial's return says nothing about the rung: keep it out of the ranking.
            self._asha.on_trial_remove(tune_controller, trial)
        else:
            self._asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        if self._asha:
            self._asha.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        counts: dict[str, int] = {}
        for record in self._stops.values():
            counts[record.reason] = counts.get(record.reason, 0) + 1
        return f"Q guard{' + ASHA' if self._asha else ''}: stops {counts or 'none yet'}"


def final_outcome(record: StopRecord | None, env_steps: int, max_t: int) -> StopRecord | None:
    """The outcome a result row settles, or None when the trial goes on.

    A scheduler decision wins; otherwise a row at the full budget means the trial completed.
    """
    if record is not None:
        return record
    if env_steps >= max_t:
        return StopRecord("completed", env_steps)
    return None


class StopReasonCallback(tune.Callback):
    """Write each trial's outcome into its last result row (``stop_reason``, ``stop_step``).

    Tune runs callbacks after the scheduler's decision and before its own loggers, and lets them
    edit the result in place: the outcome reaches ``result.json``, ``progress.csv`` and MLflow.
    Rows before the last carry an empty reason, so the column exists from the first row on. A
    population trial's rows are its members' reports: each member's last row carries its outcome.
    """

    def __init__(self, scheduler: QGuardScheduler) -> None:
        self._scheduler = scheduler

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        env_steps = int(result[m.ENV_STEPS])
        record = self._scheduler.stop_record(member_id(trial.trial_id, trial.config, result.get(SEED)))
        # A regime may have a budget of its own: the trial's plan says where it completes.
        outcome = final_outcome(record, env_steps, planned_steps(trial.config) or self._scheduler.max_t)
        result[STOP_REASON] = outcome.reason if outcome else ""
        result[STOP_STEP] = outcome.step if outcome else math.nan
