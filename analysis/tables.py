"""Ablation tables: pure functions from the tidy trial table to statistics over seeds.

The question a study answers is which factor keeps the actor-path Q bounded and what it costs in
return, so every table gives both, with intervals honest about how few seeds there are:

- returns: mean and interquartile mean (IQM, the 25% trimmed mean: rliable's definition, robust
  to one wild seed and less noisy than the median) with 95% percentile bootstrap intervals over
  seeds (``scipy.stats.bootstrap``, the method rliable uses). rliable itself does not import next
  to pandas 3 here (its dependency ``arch`` breaks), so scipy does the resampling.
- explosion rates: Wilson score intervals (binomial), and Newcombe's interval for a difference of
  two rates. A bootstrap of 0-or-1 outcomes from three seeds collapses to [0, 0] when none
  exploded; a score interval still says "up to ~56% is consistent with 0 of 3".

Nothing here reads files or draws: inputs are DataFrames and arrays, outputs are DataFrames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import optuna
import pandas as pd
from scipy import stats

from study.guard import GuardConfig, GuardState, StopReason, actor_q_excess, guard_step
from study.plan import BASELINE
from study.results import decode_param

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
# A fixed seed makes a report reproducible: the same results give the same intervals.
BOOTSTRAP_SEED = 0

Interval = tuple[float, float]
NAN_INTERVAL: Interval = (math.nan, math.nan)


# --- statistics -------------------------------------------------------------------------------


def iqm(values: Any, axis: int = -1) -> Any:
    """Interquartile mean: the mean of the middle half of the values (25% trimmed each side)."""
    return stats.trim_mean(values, 0.25, axis=axis)


def _mean(values: Any, axis: int = -1) -> Any:
    return np.mean(values, axis=axis)


def bootstrap_ci(
    samples: Sequence[np.ndarray], statistic: Callable[..., Any], seed: int = BOOTSTRAP_SEED
) -> Interval:
    """95% percentile bootstrap interval of ``statistic(*samples, axis=-1)``.

    Each sample is resampled on its own, so passing one sample per cell of a design gives the
    stratified bootstrap (seeds are exchangeable within a cell, not across cells). NaN when a
    sample has fewer than two values: one seed says nothing about the spread over seeds.
    """
    samples = [np.asarray(sample, dtype=float) for sample in samples]
    if not samples or any(len(sample) < 2 for sample in samples):
        return NAN_INTERVAL
    result = stats.bootstrap(
        samples,
        statistic,
        n_resamples=N_RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=True,
        axis=-1,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def wilson_interval(successes: int, trials: int) -> Interval:
    """95% Wilson score interval of a rate ``successes / trials``; NaN for no trials."""
    if trials == 0:
        return NAN_INTERVAL
    ci = stats.binomtest(successes, trials).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


def rate_difference(k1: int, n1: int, k2: int, n2: int) -> tuple[float, Interval]:
    """p1 - p2 with Newcombe's hybrid score interval (method 10 of Newcombe, 1998).

    Each rate's Wilson interval bounds how far it can move; the difference's interval combines
    the two distances in quadrature:
        low  = d - sqrt((p1 - l1)^2 + (u2 - p2)^2),   high = d + sqrt((u1 - p1)^2 + (p2 - l2)^2).
    """
    if n1 == 0 or n2 == 0:
        return math.nan, NAN_INTERVAL
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson_interval(k1, n1), wilson_interval(k2, n2)
    d = p1 - p2
    return d, (d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2))


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
    """Arms with the baseline first, the rest by name."""
    distinct = sorted(set(arms))
    return [BASELINE] * (BASELINE in distinct) + [arm for arm in distinct if arm != BASELINE]


# --- ablation tables --------------------------------------------------------------------------


def summarize(group: pd.DataFrame) -> dict[str, Any]:
    """One ablation row: seeds, return (mean, IQM, CIs), explosion rate and step, budget spent."""
    returns = group["final_return"].dropna().to_numpy(dtype=float)
    exploded = int(group["exploded"].sum())
    n = len(group)
    mean_ci = bootstrap_ci([returns], _mean)
    iqm_ci = bootstrap_ci([returns], iqm)
    rate_ci = wilson_interval(exploded, n)
    # No recorded outcome: the trial is still running, or its driver died before recording it.
    outcomes = group["stop_reason"].fillna("unfinished").value_counts()
    return {
        "n_seeds": n,
        "n_returns": len(returns),
        "return_mean": float(np.mean(returns)) if len(returns) else math.nan,
        "return_mean_low": mean_ci[0],
        "return_mean_high": mean_ci[1],
        "return_iqm": float(iqm(returns)) if len(returns) else math.nan,
        "return_iqm_low": iqm_ci[0],
        "return_iqm_high": iqm_ci[1],
        "exploded": exploded,
        "explosion_rate": exploded / n if n else math.nan,
        "explosion_rate_low": rate_ci[0],
        "explosion_rate_high": rate_ci[1],
        "median_explosion_step": float(group.loc[group["exploded"], "explosion_step"].median()),
        "env_steps": int(group["env_steps"].sum()),
        "outcomes": ", ".join(f"{reason} {count}" for reason, count in sorted(outcomes.items())),
    }


def ablation_table(trials: pd.DataFrame, by: str = "arm") -> pd.DataFrame:
    """A row per value of ``by`` (an arm, or one factor's levels), in natural order."""
    present = trials.dropna(subset=[by])
    order = arm_order(present[by]) if by == "arm" else level_order(present[by])
    rows = [{by: key, **summarize(present[present[by] == key])} for key in order]
    return pd.DataFrame(rows).set_index(by)


def factor_level_table(trials: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    """``ablation_table`` for each factor in turn, stacked with (factor, level) as the index."""
    parts = []
    for factor in factors:
        table = ablation_table(trials, by=factor).rename_axis("level").reset_index()
        parts.append(table.assign(factor=factor))
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, ignore_index=True).set_index(["factor", "level"])


def _difference_of_means(*cells: np.ndarray, treated_cells: int, axis: int = -1) -> Any:
    """Mean of the first ``treated_cells`` cell means minus the mean of the remaining ones."""
    means = [np.mean(cell, axis=axis) for cell in cells]
    return np.mean(means[:treated_cells], axis=0) - np.mean(means[treated_cells:], axis=0)


def _cell_returns(trials: pd.DataFrame) -> list[np.ndarray]:
    """Finite final returns per design cell (arm); cells without any are left out."""
    cells = [group["final_return"].dropna().to_numpy(dtype=float) for _, group in trials.groupby("arm")]
    return [cell for cell in cells if len(cell)]


def compare(treated: pd.DataFrame, reference: pd.DataFrame, name: str) -> dict[str, float]:
    """``treated`` minus ``reference`` trials, on return and on explosion rate, with 95% CIs.

    Return: the mean of the treated cells' mean returns minus the same over the reference cells
    (a cell is an arm), so every combination of the other factors weighs the same whatever its
    seed count; the interval is a stratified bootstrap (seeds resampled within each cell).
    Explosion rate: the difference of the two pooled rates, with Newcombe's interval.
    """
    treated_cells, reference_cells = _cell_returns(treated), _cell_returns(reference)
    effect, interval = math.nan, NAN_INTERVAL
    if treated_cells and reference_cells:
        statistic = partial(_difference_of_means, treated_cells=len(treated_cells))
        effect = float(statistic(*treated_cells, *reference_cells))
        interval = bootstrap_ci([*treated_cells, *reference_cells], statistic)
    k1, n1 = int(treated["exploded"].sum()), len(treated)
    k2, n2 = int(reference["exploded"].sum()), len(reference)
    rate, rate_ci = rate_difference(k1, n1, k2, n2)
    return dict(zip(comparison_columns(name), (effect, *interval, rate, *rate_ci), strict=True))


def comparison_columns(name: str) -> list[str]:
    """``compare``'s keys: return_<name>, its _low and _high, then the same for explosion_<name>."""
    return [f"{quantity}_{name}{end}" for quantity in ("return", "explosion") for end in ("", "_low", "_high")]


def main_effects(trials: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    """Factorial main effects: each level of each factor against the factor's first level.

    Averaged over the other factors (see ``compare``). The explosion effect is the difference of
    the rates the per-level table shows; in a balanced design it equals the cell-averaged one.
    """
    rows = []
    for factor in factors:
        order = level_order(trials[factor].dropna())
        if not order:
            continue
        reference, *levels = order
        at_reference = trials[trials[factor] == reference]
        for level in levels:
            effect = compare(trials[trials[factor] == level], at_reference, "effect")
            rows.append({"factor": factor, "level": level, "reference": reference, **effect})
    columns = ["factor", "level", "reference", *comparison_columns("effect")]
    return pd.DataFrame(rows, columns=columns).set_index(["factor", "level"])


def versus_baseline(trials: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """One-at-a-time designs: each arm's mean return and explosion rate minus the baseline's."""
    if baseline not in set(trials["arm"]):
        raise ValueError(f"arm {baseline!r} not found; arms are {arm_order(trials['arm'])}")
    base = trials[trials["arm"] == baseline]
    rows = [
        {"arm": arm, **compare(trials[trials["arm"] == arm], base, "diff")}
        for arm in arm_order(trials["arm"])
        if arm != baseline
    ]
    columns = ["arm", *comparison_columns("diff")]
    return pd.DataFrame(rows, columns=columns).set_index("arm")


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
