"""The study scheduler: the actor-path Q guard overrules ASHA, and every stop keeps its reason."""

from __future__ import annotations

import math
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from study.guard import GuardConfig, GuardState, guard_step
from study.plan import PLAN, POPULATION, expand
from study.scheduler import QGuardScheduler, StopReasonCallback, StopRecord, final_outcome

from study.spec import validate_spec

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
SPEC: dict[str, Any] = {"name": "unit", "env": "Pendulum-v1", "design": "one_at_a_time", "factors": {"tau": [0.005]},
                        "seeds": [0], "budget": {"steps": 2_000, "eval_every": 500, "checkpoint_every": 500}}
GUARD = GuardConfig(tolerance=0.1, patience=2)


def make_scheduler(**kwargs: object) -> QGuardScheduler:
    options = {"max_t": 10_000, "asha": True, "grace_period": 2_000, "reduction_factor": 2.0, **kwargs}
    scheduler = QGuardScheduler(GUARD, **options)  # type: ignore[arg-type]
    scheduler.set_search_properties("eval/return_mean", "max")
    return scheduler


def add_trial(scheduler: QGuardScheduler, trial_id: str) -> Trial:
    _strikes.pop(trial_id, None)
    trial = Trial("td3_trial", config={}, trial_id=trial_id, stub=True)
    scheduler.on_trial_add(None, trial)  # type: ignore[arg-type]
    return trial


# The strike count each trial reports, as study.trial counts it (and checkpoints it).
_strikes: dict[str, GuardState] = {}


def row(trial: Trial, step: int, ret: float, excess: float = 0.0, cfg: GuardConfig = GUARD) -> dict[str, float]:
    """One report of ``trial``: its return, its guard excess and the strikes it has counted."""
    _strikes[trial.trial_id], _ = guard_step(_strikes.get(trial.trial_id, GuardState()), excess, cfg)
    strikes = _strikes[trial.trial_id].strikes
    return {"env_steps": step, "eval/return_mean": ret, "guard/actor_q_excess": excess, "guard/strikes": strikes}


def report(scheduler: QGuardScheduler, trial: Trial, step: int, ret: float, excess: float = 0.0) -> str:
    return scheduler.on_trial_result(None, trial, row(trial, step, ret, excess))  # type: ignore[arg-type]


def test_guard_stops_a_runaway_trial_after_patience_reports_even_when_its_return_is_best() -> None:
    scheduler = make_scheduler()
    trial = add_trial(scheduler, "runaway")
    assert report(scheduler, trial, 500, 1e6, excess=2_487.0) == CONTINUE  # one strike
    assert report(scheduler, trial, 1_000, 1e6, excess=2_487.0) == STOP  # patience 2
    assert scheduler.stop_record("runaway") == StopRecord("q_explosion", 1_000)


def test_non_finite_actor_q_stops_as_non_finite() -> None:
    scheduler = make_scheduler()
    trial = add_trial(scheduler, "nan")
    report(scheduler, trial, 500, math.nan, excess=math.inf)
    assert report(scheduler, trial, 1_000, math.nan, excess=math.inf) == STOP
    assert scheduler.stop_record("nan") == StopRecord("non_finite", 1_000)


def test_excess_within_tolerance_or_not_yet_measured_never_stops() -> None:
    scheduler = make_scheduler(asha=False)
    trial = add_trial(scheduler, "healthy")
    for step, excess in [(500, math.nan), (1_000, 0.003), (1_500, 0.09), (2_000, math.nan), (2_500, 0.0)]:
        assert report(scheduler, trial, step, -200.0, excess=excess) == CONTINUE
    assert scheduler.stop_record("healthy") is None


def test_one_offending_report_between_healthy_ones_is_forgiven() -> None:
    scheduler = make_scheduler(asha=False)
    trial = add_trial(scheduler, "blip")
    for step, excess in [(500, 0.5), (1_000, 0.0), (1_500, 0.5), (2_000, 0.0)]:
        assert report(scheduler, trial, step, -200.0, excess=excess) == CONTINUE


def test_disabled_guard_reports_but_never_stops() -> None:
    scheduler = QGuardScheduler(GuardConfig(enabled=False), max_t=10_000, asha=False)
    trial = add_trial(scheduler, "unguarded")
    for step in range(500, 5_000, 500):
        assert report(scheduler, trial, step, 0.0, excess=1e6) == CONTINUE


def test_a_retry_that_re_reports_a_judged_step_does_not_strike_twice() -> None:
    """A retry from the checkpoint at 500 reports 1,000 again, with the count the trial had at 500."""
    scheduler = make_scheduler(asha=False)
    trial = add_trial(scheduler, "retried")
    checkpoint = {"env_steps": 500, "eval/return_mean": -200.0, "guard/actor_q_excess": 0.0, "guard/strikes": 0}
    assert scheduler.on_trial_result(None, trial, checkpoint) == CONTINUE  # type: ignore[arg-type]
    offending = {"env_steps": 1_000, "eval/return_mean": -200.0, "guard/actor_q_excess": 0.5, "guard/strikes": 1}
    assert scheduler.on_trial_result(None, trial, dict(offending)) == CONTINUE  # type: ignore[arg-type]
    # The attempt fails; the retry restores the strikes of step 500 and re-reports step 1,000.
    assert scheduler.on_trial_result(None, trial, dict(offending)) == CONTINUE  # type: ignore[arg-type]
    assert scheduler.stop_record("retried") is None


def test_a_resumed_study_stops_on_the_strikes_the_trial_carried_over() -> None:
    """The driver was killed after one offending report; its scheduler's memory is gone."""
    before = make_scheduler(asha=False)
    trial = add_trial(before, "resumed")
    first = {"env_steps": 1_000, "eval/return_mean": -200.0, "guard/actor_q_excess": 0.5, "guard/strikes": 1}
    assert before.on_trial_result(None, trial, first) == CONTINUE  # type: ignore[arg-type]
    after = make_scheduler(asha=False)  # Tuner.restore unpickles the scheduler as it was at the start
    second = {"env_steps": 1_500, "eval/return_mean": -200.0, "guard/actor_q_excess": 0.5, "guard/strikes": 2}
    assert after.on_trial_result(None, trial, second) == STOP  # type: ignore[arg-type]
    assert after.stop_record("resumed") == StopRecord("q_explosion", 1_500)


def test_asha_prunes_a_worse_trial_at_its_rung_and_files_it_as_asha() -> None:
    scheduler = make_scheduler()
    good, bad = add_trial(scheduler, "good"), add_trial(scheduler, "bad")
    assert report(scheduler, good, 2_000, -100.0) == CONTINUE  # first at the rung: nothing to compare
    assert report(scheduler, bad, 2_000, -900.0) == STOP
    assert scheduler.stop_record("bad") == StopRecord("asha", 2_000)
    assert scheduler.stop_record("good") is None


def test_asha_stop_at_the_full_budget_is_completion() -> None:
    scheduler = make_scheduler()
    trial = add_trial(scheduler, "full")
    assert report(scheduler, trial, 10_000, -150.0) == STOP
    assert scheduler.stop_record("full") == StopRecord("completed", 10_000)


def test_asha_lets_nan_return_pass_but_the_guard_still_catches_the_trial() -> None:
    # ASHA compares NaN with its cutoff, which is False: without the guard this trial runs on.
    scheduler = make_scheduler()
    leader, broken = add_trial(scheduler, "leader"), add_trial(scheduler, "broken")
    report(scheduler, leader, 2_000, -100.0)
    assert report(scheduler, broken, 2_000, math.nan, excess=math.inf) == CONTINUE  # ASHA passes it
    assert report(scheduler, broken, 2_500, math.nan, excess=math.inf) == STOP
    assert scheduler.stop_record("broken") == StopRecord("non_finite", 2_500)


def test_a_diverged_trial_does_not_raise_the_rung_cutoff_for_others() -> None:
    scheduler = make_scheduler()
    diverged, later = add_trial(scheduler, "diverged"), add_trial(scheduler, "later")
    report(scheduler, diverged, 1_500, 5_000.0, excess=3.0)
    report(scheduler, diverged, 2_000, 5_000.0, excess=3.0)  # guard stop, before ASHA sees the rung
    scheduler.on_trial_complete(None, diverged, {"env_steps": 2_000, "eval/return_mean": 5_000.0})  # type: ignore[arg-type]
    # Had the diverged trial's return been recorded, -100 would fall below the rung's cutoff.
    assert report(scheduler, later, 2_000, -100.0) == CONTINUE


def test_final_outcome_prefers_the_scheduler_and_else_needs_the_full_budget() -> None:
    assert final_outcome(StopRecord("asha", 2_000), 2_000, 10_000) == StopRecord("asha", 2_000)
    assert final_outcome(None, 10_000, 10_000) == StopRecord("completed", 10_000)
    assert final_outcome(None, 9_500, 10_000) is None


def test_stop_reason_callback_writes_the_outcome_into_the_last_row_only() -> None:
    scheduler = make_scheduler()
    callback = StopReasonCallback(scheduler)
    trial = add_trial(scheduler, "runaway")
    rows = []
    for step in (500, 1_000):
        result = row(trial, step, 0.0, excess=50.0)
        scheduler.on_trial_result(None, trial, dict(result))  # type: ignore[arg-type]
        callback.on_trial_result(iteration=0, trials=[trial], trial=trial, result=result)
        rows.append(result)
    assert rows[0]["stop_reason"] == "" and math.isnan(rows[0]["stop_step"])
    assert (rows[1]["stop_reason"], rows[1]["stop_step"]) == ("q_explosion", 1_000)


def test_a_trial_completes_at_its_own_plans_budget_not_the_studys() -> None:
    """A regime with a budget of its own: its trials end at their plan's steps, and that is completion."""
    spec = validate_spec({**SPEC, "regimes": {"short": {"budget": {"steps": 1_000}}, "long": {}}})
    scheduler = make_scheduler(asha=False, max_t=spec.budget.steps)
    callback = StopReasonCallback(scheduler)
    outcomes = {}
    for plan in expand(spec):
        trial = Trial("td3_trial", config={PLAN: plan.model_dump(mode="json")}, trial_id=plan.arm, stub=True)
        scheduler.on_trial_add(None, trial)  # type: ignore[arg-type]
        result = row(trial, 1_000, 0.0)
        scheduler.on_trial_result(None, trial, dict(result))  # type: ignore[arg-type]
        callback.on_trial_result(iteration=0, trials=[trial], trial=trial, result=result)
        outcomes[plan.arm] = result["stop_reason"]
    assert outcomes == {"short/baseline": "completed", "long/baseline": ""}  # long goes on to 2,000


def test_its_status_line_names_asha_only_when_asha_runs() -> None:
    """Tune's console shows ``debug_string``; a study with ASHA off must not read as pruned by it."""
    assert make_scheduler(asha=False).debug_string() == "Q guard: stops none yet"
    assert make_scheduler(asha=True).debug_string() == "Q guard + ASHA: stops none yet"


def test_a_population_members_stop_is_recorded_for_that_member_and_the_trial_goes_on() -> None:
    """Tune stops whole trials: a population freezes its member itself, and the scheduler files the
    outcome of each member's report by the same rule, under the member's id."""
    scheduler = make_scheduler(asha=False)
    callback = StopReasonCallback(scheduler)
    trial = Trial("td3_trial", config={POPULATION: []}, trial_id="pop", stub=True)
    scheduler.on_trial_add(None, trial)  # type: ignore[arg-type]
    members = {0: GuardState(), 3: GuardState()}

    def member_report(seed: int, step: int, excess: float) -> tuple[str, dict[str, Any]]:
        members[seed], _ = guard_step(members[seed], excess, GUARD)
        result = {"env_steps": step, "eval/return_mean": 0.0, "guard/actor_q_excess": excess,
                  "guard/strikes": members[seed].strikes, "seed": seed}
        decision = scheduler.on_trial_result(None, trial, result)  # type: ignore[arg-type]
        callback.on_trial_result(iteration=0, trials=[trial], trial=trial, result=result)
        return decision, result

    assert member_report(0, 500, 0.0)[0] == CONTINUE and member_report(3, 500, 50.0)[0] == CONTINUE
    decision, stopped = member_report(3, 1_000, 50.0)
    assert decision == CONTINUE  # the healthy member goes on
    assert (stopped["stop_reason"], stopped["stop_step"]) == ("q_explosion", 1_000)
    assert scheduler.stop_record("pop-s3") == StopRecord("q_explosion", 1_000) and scheduler.stop_record("pop") is None
    _, healthy = member_report(0, 1_000, 0.0)
    assert healthy["stop_reason"] == ""
    _, last = member_report(0, 10_000, 0.0)
    assert (last["stop_reason"], last["stop_step"]) == ("completed", 10_000)
    # A retry from a checkpoint before the stop replays member 3's earlier report: not a stop there.
    members[3] = GuardState()
    _, replayed = member_report(3, 500, 50.0)
    assert replayed["stop_reason"] == "" and scheduler.stop_record("pop-s3") is None
