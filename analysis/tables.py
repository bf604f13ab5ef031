"""Ablation tables: pure functions from the trial table and the curves to statistics over seeds.

The question a study answers is which factor keeps the actor-path Q bounded and what it costs in
return, so every table gives both, with the intervals of analysis.stats, whose coverage at 3-10
seeds is measured there (Student-t over seeds; Wilson and Newcombe for rates):

- returns at a common budget: ASHA stops trials at its rungs and the guard anywhere, so a row
  reads each trial's latest evaluation at the last step all its trials reached (``return_step``),
  not final returns of different budgets. The IQM trims nothing below 4 seeds (``iqm_is_mean``).
- explosions by a horizon (``stats.explosion_counts``): a trial pruned before it without exploding
  is censored, in neither numerator nor denominator; it is not a survivor.
- comparisons pair by seed (arms: ``verdicts.compare_arm``; main effects: by seed and cell) and say
  when they cannot.

Nothing here reads files or draws: inputs are DataFrames, outputs are DataFrames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import optuna
import pandas as pd

from analysis import stats, verdicts
from study.guard import GuardConfig, GuardState, StopReason, actor_q_excess, guard_step
from study.plan import BASELINE, baseline_of, regime_of
from study.results import decode_param


# --- per-trial quantities ---------------------------------------------------------------------


def q_ratio(max_actor_q: float, q_high: float) -> float:
    """Largest actor-path Q as a multiple of the interval's upper end (NaN unless that end > 0).

    With rewards all <= 0 (Pendulum) the upper end is <= 0 and a ratio to it means nothing;
    ``q_excess`` is defined for every interval.
    """
    if not (math.isfinite(max_actor_q) and math.isfinite(q_high)) or q_high <= 0:
        return math.nan
    return max_actor_q / q_high


def q_excess(max_actor_q: float, min_actor_q: float, q_low: float, q_high: float) -> float:
    """How far the trial's extreme actor-path Q left the interval, in interval widths (the guard's
    measure, study.guard.actor_q_excess); NaN when the trial reported no interval or no Q."""
    if any(math.isnan(value) for value in (max_actor_q, min_actor_q, q_low, q_high)):
        return math.nan
    return actor_q_excess(max_actor_q, min_actor_q, (q_low, q_high))


def guard_replay(
    steps: Sequence[float], excess: Sequence[float], cfg: GuardConfig | None = None
) -> tuple[StopReason | None, float]:
    """The guard's verdict replayed on a reported ``guard/actor_q_excess`` series.

    A trial run with the guard disabled (or pruned by ASHA before its stop) still has a verdict:
    the first report at which the guard would have stopped it. Returns (reason, step), or
    (None, NaN) when the guard would have let it run.
    """
    cfg = (cfg or GuardConfig()).model_copy(update={"enabled": True})
    state = GuardState()
    for step, value in zip(steps, excess, strict=True):
        state, reason = guard_step(state, float(value), cfg)
        if reason is not None:
            return reason, float(step)
    return None, math.nan


# --- ordering ---------------------------------------------------------------------------------


def parse_level(text: str) -> Any:
    """A factor level as the trial table spells it (YAML, as in arm names: ``null``, ``true``,
    ``0.01``, ``[256,256]``, which JSON reads too) back to its value; other text stays text."""
    return decode_param(text)


def _level_key(text: str) -> tuple[int, float, str]:
    value = parse_level(text)
    if value is None:  # "off" (no clipping, no penalty) reads first: it is the natural reference
        return (0, 0.0, "")
    if isinstance(value, int | float):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def level_order(levels: Sequence[str]) -> list[str]:
    """Distinct levels in natural order: None first, then numbers ascending, then text."""
    return sorted({str(level) for level in levels}, key=_level_key)


def arm_order(arms: Sequence[str]) -> list[str]:
    """Arms with the baseline first, the rest by name; in a study with regimes, regime by regime,
    each led by its own baseline (``runaway/baseline``)."""
    return sorted(set(arms), key=lambda arm: (regime_of(arm) or "", arm != baseline_of(arm), arm))


def missing_baselines(arms: Sequence[str]) -> list[str]:
    """The baselines some arm is compared with that did not run (``baseline``, or a regime's)."""
    return sorted({baseline_of(arm) for arm in arms} - set(arms))


def no_baseline_ran(arms: Sequence[str]) -> bool:
    """No arm can be compared: none of the baselines the arms are compared with ran."""
    return not set(arms) & {baseline_of(arm) for arm in arms}


# --- ablation tables --------------------------------------------------------------------------


def returns_at_common_step(curves: pd.DataFrame, trials: pd.DataFrame) -> tuple[float, pd.Series]:
    """The last step every evaluated trial of ``trials`` reached, and each one's return there (by
    trial_id). A trial the guard stopped before its first evaluation has no return to read: it is
    left out rather than leaving no common step at all; so is a crashed or unfinished one
    (``stats.observed_by_design``)."""
    evaluated = stats.return_at(curves, math.inf, stats.observed_by_design(trials)["trial_id"]).dropna().index
    step = stats.common_step(curves, evaluated)
    return step, stats.return_at(curves, step, evaluated)


def summarize(group: pd.DataFrame, curves: pd.DataFrame, horizon: float) -> dict[str, Any]:
    """One ablation row: seeds; the return at the group's common step (mean with its t interval,
    IQM); explosions by ``horizon`` (exploded, observed, censored, rate with its Wilson interval,
    median step); the budget spent and how the trials ended."""
    step, at_step = returns_at_common_step(curves, group)
    returns = at_step.dropna().to_numpy(dtype=float)
    mean_low, mean_high = stats.t_interval(returns)
    middle = stats.iqm(returns)
    counts = stats.explosion_counts(group.assign(arm="all"), horizon).loc["all"]  # the group as one arm
    exploded_by = stats.explosion_outcome(group, horizon).eq(True)
    # No recorded outcome: the trial is still running, or its driver died before recording it.
    outcomes = group["stop_reason"].fillna("unfinished").value_counts()
    return {
        "n_seeds": len(group),
        "n_returns": len(returns),
        "return_step": step,
        "return_mean": float(np.mean(returns)) if len(returns) else math.nan,
        "return_mean_low": mean_low,
        "return_mean_high": mean_high,
        "return_iqm": middle.value,
        "iqm_is_mean": middle.is_mean,
        "exploded": int(counts["exploded"]),
        "observed": int(counts["observed"]),
        "censored": int(counts["censored"]),
        "horizon": horizon,
        "explosion_rate": counts["rate"],
        "explosion_rate_low": counts["rate_low"],
        "explosion_rate_high": counts["rate_high"],
        "median_explosion_step": float(group.loc[exploded_by, "explosion_step"].median()),
        "env_steps": int(group["env_steps"].sum()),
        "outcomes": ", ".join(f"{reason} {count}" for reason, count in sorted(outcomes.items())),
    }


def ablation_table(trials: pd.DataFrame, curves: pd.DataFrame, by: str = "arm") -> pd.DataFrame:
    """A row per value of ``by`` (an arm, or one factor's levels), in natural order. Rows count
    explosions by one horizon, ``stats.default_horizon`` of the trials compared with them: an arm
    row's regime's (regimes may have budgets of their own), else all the trials. Each row reads
    returns at its own common step, which ``return_step`` states. Arm rows also read them at the
    step common to every arm of their regime (``shared_*``), where one arm's returns compare with
    another's (the MLflow runs table shows these side by side)."""
    present = trials.dropna(subset=[by])
    order = arm_order(present[by]) if by == "arm" else level_order(present[by])
    if by == "arm":
        horizons = {regime: stats.default_horizon(group) for regime, group in by_regime(present)}
        horizon_of = {arm: horizons[regime_key(arm)] for arm in order}
    else:
        horizon_of = dict.fromkeys(order, stats.default_horizon(present))
    rows = [{by: key, **summarize(present[present[by] == key], curves, horizon_of[key])} for key in order]
    table = pd.DataFrame(rows).set_index(by)
    return table.join(shared_returns(present, curves)) if by == "arm" else table


def regime_key(arm: str) -> str:
    """The regime an arm's trials ran in, "" in a study without regimes."""
    return regime_of(arm) or ""


def by_regime(trials: pd.DataFrame) -> Any:
    """The trials grouped by their arm's regime (``regime_key``), in order of appearance."""
    return trials.groupby(trials["arm"].map(regime_key), sort=False)


def shared_returns(trials: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Per arm: ``shared_step``, the common step of all its regime's trials (of every trial without
    regimes), and the mean return there with its t interval over the arm's evaluated seeds."""
    rows = []
    for _, regime in by_regime(trials):
        step, at_step = returns_at_common_step(curves, regime)
        for arm, group in regime.groupby("arm", sort=False):
            returns = at_step.reindex(group["trial_id"]).dropna().to_numpy(dtype=float)
            low, high = stats.t_interval(returns)
            mean = float(np.mean(returns)) if len(returns) else math.nan
            rows.append({"arm": arm, "shared_step": step, "shared_return_mean": mean,
                         "shared_return_mean_low": low, "shared_return_mean_high": high})  # fmt: skip
    return pd.DataFrame(rows).set_index("arm")


def factor_level_table(trials: pd.DataFrame, curves: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    """``ablation_table`` for each factor in turn, stacked with (factor, level) as the index."""
    parts = []
    for factor in factors:
        table = ablation_table(trials, curves, by=factor).rename_axis("level").reset_index()
        parts.append(table.assign(factor=factor))
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, ignore_index=True).set_index(["factor", "level"])


# --- comparisons ------------------------------------------------------------------------------


def comparison_row(c: verdicts.ArmComparison) -> dict[str, Any]:
    """A comparison as a table row. ``*_seeds``: the matched seeds when paired, else every seed
    either side has; counts and rates are of the trials observed to the horizon."""
    rate, ret = c.rate, c.ret
    return {
        "exploded": rate.exploded_arm,
        "observed": rate.n_arm,
        "reference_exploded": rate.exploded_baseline,
        "reference_observed": rate.n_baseline,
        "censored": c.censored,
        "horizon": c.horizon,
        "explosion_diff": rate.estimate,
        "explosion_diff_low": rate.low,
        "explosion_diff_high": rate.high,
        "explosion_paired": rate.paired,
        "explosion_seeds": len(rate.seeds),
        "return_step": c.step,
        "return_diff": ret.estimate if ret else math.nan,
        "return_diff_low": ret.low if ret else math.nan,
        "return_diff_high": ret.high if ret else math.nan,
        "return_paired": bool(ret and ret.paired),
        "return_seeds": len(ret.seeds) if ret else 0,
        "verdict": verdicts.verdict(c),
    }


def arm_comparisons(trials: pd.DataFrame, curves: pd.DataFrame) -> list[verdicts.ArmComparison]:
    """One-at-a-time designs: every other arm against its baseline, ``baseline`` or in a study with
    regimes its regime's (``verdicts.compare_arm``: paired by seed when both have the same seeds,
    explosions by the pair's horizon, returns at its common step)."""
    present = set(trials["arm"])
    if no_baseline_ran(trials["arm"]):
        raise ValueError(f"arm(s) {missing_baselines(trials['arm'])} not found; arms are {arm_order(trials['arm'])}")
    # A regime whose baseline did not run (yet) leaves its arms out, not the other regimes'.
    return [verdicts.compare_arm(trials, curves, arm, baseline_of(arm))
            for arm in arm_order(trials["arm"]) if arm != baseline_of(arm) and baseline_of(arm) in present]


def versus_baseline(trials: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """A row per arm: its explosion rate and return minus its baseline's, with the verdict."""
    return _table([{"arm": c.arm, **comparison_row(c)} for c in arm_comparisons(trials, curves)], ["arm"])


def main_effect(trials: pd.DataFrame, curves: pd.DataFrame, factors: Sequence[str], factor: str, level: str,
                reference: str) -> verdicts.ArmComparison:
    """``factor`` at ``level`` against ``reference``, averaged over the other factors, paired by seed.

    A cell is one combination of the other factors' levels; a pair is a trial at ``level`` and one
    at ``reference`` in the same cell with the same seed. Returns, at the common step of the two
    levels' evaluated trials: per seed, the mean over its pairs of the difference, so every cell
    weighs the same; a t interval over seeds, the independent units (with fewer than two seeds
    paired, Welch's between the seeds' cell means at each level). Explosions, by the two
    levels' default horizon: Newcombe's paired interval over the pairs with both outcomes
    observed (pairs of one seed in different cells share the seed, not the configuration: taken
    as independent); with fewer than two such pairs, Newcombe's unpaired one on every observed
    trial. A trial without a partner (censored, never evaluated, missing) drops out of the pairs.
    """
    both = trials[trials[factor].isin([level, reference])]
    horizon = stats.default_horizon(both)
    step, at_step = returns_at_common_step(curves, both)
    others = [f for f in factors if f != factor]
    keyed = both.assign(
        outcome=stats.explosion_outcome(both, horizon), ret=both["trial_id"].map(at_step),
        cell=both[others].astype(str).agg("|".join, axis=1) if others else "",
    )
    treated, at_reference = keyed[keyed[factor] == level], keyed[keyed[factor] == reference]
    pairs = treated.merge(at_reference, on=["seed", "cell"], suffixes=("", "_ref"))
    per_seed = pairs.dropna(subset=["ret", "ret_ref"]).groupby("seed")[["ret", "ret_ref"]].mean()
    if len(per_seed) < 2:  # unpaired: each seed's mean over its cells, one level against the other
        per_seed = pd.DataFrame({"ret": treated.groupby("seed")["ret"].mean(), "ret_ref": at_reference.groupby("seed")["ret"].mean()})
    ret = stats.mean_difference(per_seed["ret"], per_seed["ret_ref"]) if math.isfinite(step) else None
    observed = pairs.dropna(subset=["outcome", "outcome_ref"])
    if len(observed) >= 2:
        # Paired by position, pair by pair; the seeds a verdict counts are the pairs' seeds.
        rate = stats.rate_difference(*(observed[column].astype(bool).to_numpy() for column in ("outcome", "outcome_ref")))
        rate = replace(rate, seeds=tuple(sorted(int(seed) for seed in set(observed["seed"]))))
    else:
        rate = _unpaired_rate(keyed.dropna(subset=["outcome"]), factor, level, reference)
    censored = int(keyed["outcome"].isna().sum())
    return verdicts.ArmComparison(f"{factor}={level} vs {reference}", rate, ret, step, horizon, censored)


def _unpaired_rate(observed: pd.DataFrame, factor: str, level: str, reference: str) -> stats.RateDifference:
    """Newcombe's hybrid score interval of the two levels' explosion rates over every observed trial."""
    treated, ref = (observed.loc[observed[factor] == key, "outcome"].astype(bool) for key in (level, reference))
    (k1, n1), (k2, n2) = (int(treated.sum()), len(treated)), (int(ref.sum()), len(ref))
    d, (low, high) = stats.newcombe_unpaired(k1, n1, k2, n2)
    seeds = tuple(sorted(int(seed) for seed in set(observed["seed"])))
    return stats.RateDifference(d, low, high, False, seeds, n1, n2, "Newcombe hybrid score", k1, k2)


def effect_comparisons(
    trials: pd.DataFrame, curves: pd.DataFrame, factors: Sequence[str]
) -> dict[tuple[str, str, str], verdicts.ArmComparison]:
    """Factorial designs: (factor, level, reference) -> ``main_effect`` for every level of every
    factor against the factor's first level in natural order (None first: "off" is the reference)."""
    effects = {}
    for factor in factors:
        order = level_order(trials[factor].dropna())
        for level in order[1:]:
            effects[(factor, level, order[0])] = main_effect(trials, curves, factors, factor, level, order[0])
    return effects


def main_effects(trials: pd.DataFrame, curves: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    """A row per (factor, level): its ``main_effect`` against the factor's reference level."""
    rows = [
        {"factor": factor, "level": level, "reference": reference, **comparison_row(c)}
        for (factor, level, reference), c in effect_comparisons(trials, curves, factors).items()
    ]
    return _table(rows, ["factor", "level"])


def _table(rows: list[dict[str, Any]], index: list[str]) -> pd.DataFrame:
    """Rows as a frame indexed by ``index``; no rows: an empty frame with that index (no columns)."""
    return pd.DataFrame(rows).set_index(index) if rows else pd.DataFrame(columns=index).set_index(index)


# --- Optuna studies ---------------------------------------------------------------------------


def best_configs(trials: pd.DataFrame, factors: Sequence[str], k: int = 5) -> pd.DataFrame:
    """The ``k`` trials with the highest final return among those whose Q stayed bounded."""
    bounded = trials[~trials["exploded"]].dropna(subset=["final_return"])
    columns = ["arm", "seed", *factors, "final_return", "best_return", "max_actor_q", "env_steps"]
    return bounded.sort_values("final_return", ascending=False).head(k)[columns].reset_index(drop=True)


def _distribution(levels: Sequence[str]) -> optuna.distributions.BaseDistribution | None:
    """The widest Optuna distribution the seen levels fit in; None for a factor never varied."""
    values = [parse_level(level) for level in set(levels)]
    if len(values) < 2:
        return None
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        if all(isinstance(v, int) for v in values):
            return optuna.distributions.IntDistribution(min(values), max(values))
        return optuna.distributions.FloatDistribution(min(values), max(values))
    return optuna.distributions.CategoricalDistribution(level_order(levels))


def param_importances(
    trials: pd.DataFrame, factors: Sequence[str], target: str = "final_return", seed: int = 0
) -> pd.Series:
    """fANOVA importance of each varied factor for ``target`` (a numeric or boolean column).

    The study is rebuilt in memory from the trials (``optuna.trial.create_trial``), so importances
    come from Optuna's own evaluator whether or not the original Optuna storage survives. Use
    ``target="exploded"`` to ask which factor decides whether Q stays bounded. Empty when fewer
    than two trials have a finite target or no factor varies.
    """
    usable = trials.dropna(subset=[target, *factors])
    distributions = {f: d for f in factors if (d := _distribution(usable[f].tolist())) is not None}
    if len(usable) < 2 or not distributions:
        return pd.Series(dtype=float, name="importance")

    def value_of(factor: str, level: str) -> Any:
        if isinstance(distributions[factor], optuna.distributions.CategoricalDistribution):
            return level
        return parse_level(level)

    frozen = [
        optuna.trial.create_trial(
            params={f: value_of(f, row[f]) for f in distributions},
            distributions=distributions,
            value=float(row[target]),
        )
        for _, row in usable.iterrows()
    ]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.add_trials(frozen)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return pd.Series({k: float(v) for k, v in importances.items()}, name="importance", dtype=float)
