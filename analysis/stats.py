"""Comparisons of an arm with the baseline that stay honest at 3-10 seeds: pure functions (numpy,
scipy, pandas; no I/O) over analysis.load's trial table and curves.

Pairing. A seed gives every arm the same initial weights, warm-up actions and env seeds, so an
arm with the same seeds as the baseline is compared seed by seed: returns by the Student-t
interval of the mean per-seed difference; explosion rates by Newcombe's paired square-and-add
interval (Newcombe 1998, "Improved confidence intervals for the difference between binomial
proportions based on paired data", Stat Med 17:2635-2650, method 10), which reproduces the
published example of Fagerland, Lydersen & Laake (2017, ch. 8, Cavo et al. 2012): 59/6/16/80
pairs give -0.0621 [-0.1186, -0.0046]. With different seed sets a result says ``paired=False``
and holds the unpaired interval: Welch's t; Newcombe's hybrid score (1998, Stat Med 17:873-890).

Why Student-t: the percentile bootstrap ignores that the spread is estimated (75% at 3 seeds on
normal data); t is exact under normality, near nominal with heavy tails, and Johnson's skew-
corrected t did no better on skewed data. No interval reaches a mean set by seeds never drawn
(30% failing seeds are absent from 17% of 5-seed studies): those rows undercover.

Coverage of nominal 95% intervals at 3 / 5 / 10 seeds, as seen (every row and how they were
simulated: ``PYTHONPATH=. python bench/stats_coverage.py``, bench/results/stats_coverage.md):
t, normal 0.946 / 0.949 / 0.955; lognormal sigma 0.5 0.918 / 0.918 / 0.929, sigma 1 0.835 / 0.815
/ 0.838; 50% learning, 50% failing seeds 0.776 / 0.932 / 0.940; 70/30 0.630 / 0.824 / 0.932.
Paired t, skewed noise 0.945 / 0.932 / 0.938. Newcombe paired, exact minimum over rates and
correlations: 0.903 / 0.913 / 0.926. Percentile bootstrap, normal: 0.747 / 0.827 / 0.905.

Censoring (``explosion_outcome``). A trial's observation ends at its stop step, else env_steps.
Against a horizon h: exploded at a step <= h (or at an unknown step) -> exploded; observed to h
without exploding by then -> survivor; otherwise (ASHA pruned it at s < h, it crashed, it is
still running) -> censored at its end, in neither numerator nor denominator. The default
horizon is the earliest end among completed trials, a step every non-censored trial reached
(with none, the latest step ASHA pruned at; else none, NaN); ``horizon=8000`` counts ASHA's
8,000-step trials as survivors to 8,000.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import integrate, stats

from study.metrics import ENV_STEPS, EVAL_RETURN, EVAL_STEP
from study.guard import GUARD_STOPS

CONFIDENCE = 0.95
COMPLETED = "completed"

Interval = tuple[float, float]


# --- a mean and the IQM -----------------------------------------------------------------------
@lru_cache(maxsize=256)
def _t(df: float, confidence: float) -> float:
    """Two-sided quantile of Student's t (``df`` inf: the normal)."""
    return float(stats.norm.ppf(0.5 + confidence / 2) if math.isinf(df) else stats.t.ppf(0.5 + confidence / 2, df))


def _finite(values: Any) -> np.ndarray:
    return (array := np.asarray(values, dtype=float))[np.isfinite(array)]


def t_interval(values: Any, confidence: float = CONFIDENCE) -> Interval:
    """Student-t interval of the mean of the finite ``values``; NaN for fewer than two."""
    x = _finite(values)
    if len(x) < 2:
        return math.nan, math.nan
    half = _t(len(x) - 1, confidence) * float(np.std(x, ddof=1)) / math.sqrt(len(x))
    return float(np.mean(x)) - half, float(np.mean(x)) + half


def welch_interval(a: Any, b: Any, confidence: float = CONFIDENCE) -> Interval:
    """Welch's t interval of mean(a) - mean(b) (unequal variances); NaN unless each has two."""
    a, b = _finite(a), _finite(b)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    d, se = float(np.mean(a) - np.mean(b)), math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se > 0 else math.inf
    return d - _t(float(df), confidence) * se, d + _t(float(df), confidence) * se


class IQM(NamedTuple):
    """Interquartile mean; ``is_mean``: nothing was trimmed (fewer than 4 values), it is the mean."""

    value: float
    n: int
    trimmed_each_side: int
    is_mean: bool


def iqm(values: Any) -> IQM:
    """The 25% trimmed mean of the finite ``values`` (scipy's trim_mean, rliable's IQM).

    It cuts int(0.25 n) values from each end: none below 4 seeds, where the "IQM" is the plain
    mean and a table should say so (``is_mean``)."""
    cut = int(0.25 * len(x := _finite(values)))
    value = float(stats.trim_mean(x, 0.25)) if len(x) else math.nan
    return IQM(value, len(x), cut, cut == 0)


# --- rates ------------------------------------------------------------------------------------
def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson score interval of the rate k / n; NaN for n = 0."""
    if n == 0:
        return math.nan, math.nan
    z2, p = _t(math.inf, confidence) ** 2, k / n
    centre, half = p + z2 / (2 * n), math.sqrt(z2 * p * (1 - p) / n + z2 * z2 / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z2 / n)), min(1.0, (centre + half) / (1 + z2 / n))


def newcombe_unpaired(k1: int, n1: int, k2: int, n2: int, confidence: float = CONFIDENCE) -> tuple[float, Interval]:
    """k1/n1 - k2/n2 with Newcombe's hybrid score interval (independent samples, method 10)."""
    if n1 == 0 or n2 == 0:
        return math.nan, (math.nan, math.nan)
    (p1, p2), d = (k1 / n1, k2 / n2), k1 / n1 - k2 / n2
    (l1, u1), (l2, u2) = wilson(k1, n1, confidence), wilson(k2, n2, confidence)
    return d, (d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2))


def newcombe_paired(both: int, only1: int, only2: int, neither: int, confidence: float = CONFIDENCE) -> tuple[float, Interval]:
    """p1 - p2 for n matched pairs with Newcombe's (1998) paired square-and-add interval, method 10.

    Cells: ``both`` pairs with the event in each member, ``only1`` in the first only, ``only2`` in
    the second only, ``neither``. p1 = (both + only1)/n, p2 = (both + only2)/n. With Wilson limits
    (l_i, u_i) and the correlation phi of the two outcomes (numerator AD - BC reduced by n/2 when
    positive, 0 when that crosses zero or a margin is empty):
        low  = d - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
        high = d + sqrt((u1 - p1)^2 - 2 phi (u1 - p1)(p2 - l2) + (p2 - l2)^2)
    """
    n = both + only1 + only2 + neither
    if n == 0:
        return math.nan, (math.nan, math.nan)
    k1, k2 = both + only1, both + only2
    p1, p2, d = k1 / n, k2 / n, (only1 - only2) / n
    (l1, u1), (l2, u2) = wilson(k1, n, confidence), wilson(k2, n, confidence)
    margins, cross = k1 * (n - k1) * k2 * (n - k2), both * neither - only1 * only2
    numerator = cross - n / 2 if cross > n / 2 else min(cross, 0)
    phi = numerator / math.sqrt(margins) if margins > 0 else 0.0
    down1, up2, up1, down2 = p1 - l1, u2 - p2, u1 - p1, p2 - l2
    low = math.sqrt(max(0.0, down1**2 - 2 * phi * down1 * up2 + up2**2))
    high = math.sqrt(max(0.0, up1**2 - 2 * phi * up1 * down2 + down2**2))
    return d, (max(-1.0, d - low), min(1.0, d + high))


# --- arm versus baseline ----------------------------------------------------------------------
@dataclass(frozen=True)
class Difference:
    """Arm minus baseline. ``seeds``: the matched seeds when ``paired``, else every seed either
    arm contributed; ``n_arm``/``n_baseline``: the values each side contributed."""

    estimate: float
    low: float
    high: float
    paired: bool
    seeds: tuple[int, ...]
    n_arm: int
    n_baseline: int
    method: str


@dataclass(frozen=True)
class RateDifference(Difference):
    """A difference of explosion rates, with the counts it came from."""

    exploded_arm: int
    exploded_baseline: int


def _by_seed(values: Any, as_float: bool) -> pd.Series:
    """A Series indexed by seed without its missing (NaN/None; as floats, non-finite) values; an
    array is indexed 0..n-1, so two arrays of one length pair by position."""
    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values))
    if series.index.has_duplicates:
        raise ValueError(f"a seed appears twice: {sorted(set(series.index[series.index.duplicated()]))}")
    if as_float:
        series = series.astype(float).replace([np.inf, -np.inf], np.nan)
    return series.dropna()


def _pairing(arm: Any, baseline: Any, pair_common: bool, as_float: bool) -> tuple[pd.Series, pd.Series, bool]:
    a, b = _by_seed(arm, as_float), _by_seed(baseline, as_float)
    common = a.index.intersection(b.index)
    if len(common) >= 2 and (pair_common or len(common) == len(a) == len(b)):
        return a.loc[common].sort_index(), b.loc[common].sort_index(), True
    return a, b, False


def _seeds(*series: pd.Series) -> tuple[int, ...]:
    return tuple(sorted({int(s) for part in series for s in part.index}))


def mean_difference(arm: Any, baseline: Any, *, pair_common: bool = False, confidence: float = CONFIDENCE) -> Difference:
    """Mean return of ``arm`` minus ``baseline`` (Series indexed by seed, or arrays paired by
    position; non-finite values dropped first): a t interval of the per-seed differences when both
    have the same seeds (two at least), else Welch's on all values, or with ``pair_common`` paired
    on the seeds both have (if two or more)."""
    a, b, paired = _pairing(arm, baseline, pair_common, as_float=True)
    if paired:
        diff = a.to_numpy() - b.to_numpy()
        return Difference(float(np.mean(diff)), *t_interval(diff, confidence), True, _seeds(a), len(a), len(b), "paired t")
    estimate = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    return Difference(estimate, *welch_interval(a, b, confidence), False, _seeds(a, b), len(a), len(b), "Welch t")


def rate_difference(arm: Any, baseline: Any, *, pair_common: bool = False, confidence: float = CONFIDENCE) -> RateDifference:
    """Explosion rate of ``arm`` minus ``baseline``: booleans (exploded by the horizon) by seed,
    NaN/None for a censored trial (dropped). Newcombe paired on the same seeds, else Newcombe's
    hybrid score; ``pair_common`` as in ``mean_difference``."""
    a, b, paired = _pairing(arm, baseline, pair_common, as_float=False)
    a, b = a.astype(bool), b.astype(bool)
    ka, kb, x, y = int(a.sum()), int(b.sum()), a.to_numpy(), b.to_numpy()
    if paired:
        cells = (int(np.sum(x & y)), int(np.sum(x & ~y)), int(np.sum(~x & y)), int(np.sum(~x & ~y)))
        d, (low, high) = newcombe_paired(*cells, confidence=confidence)
        method, seeds = "Newcombe paired", _seeds(a)
    else:
        d, (low, high) = newcombe_unpaired(ka, len(a), kb, len(b), confidence)
        method, seeds = "Newcombe hybrid score", _seeds(a, b)
    return RateDifference(d, low, high, paired, seeds, len(a), len(b), method, ka, kb)


# --- returns at a common budget ---------------------------------------------------------------
def evaluations(curves: pd.DataFrame, trial_ids: Any = None) -> tuple[pd.DataFrame, pd.Index]:
    """The evaluations of ``trial_ids`` (all when None), one row each at the step it ran, sorted by
    step, and the trial ids (``trial_ids`` as given, else those with an evaluation).

    A report carries the latest evaluation until the next one, and says the step it ran at
    (``eval/env_steps``): the rows of other steps are copies. Curves without that column (stores
    written before it) keep every finite row."""
    rows = curves[np.isfinite(curves[EVAL_RETURN].to_numpy(dtype=float))]
    if trial_ids is not None:
        rows = rows[rows["trial_id"].isin(list(trial_ids))]
    if EVAL_STEP in rows:
        rows = rows[rows[EVAL_STEP].isna() | (rows[EVAL_STEP] == rows[ENV_STEPS])]
    rows = rows.sort_values(["trial_id", ENV_STEPS])
    ids = pd.unique(rows["trial_id"]) if trial_ids is None else list(trial_ids)
    return rows, pd.Index(ids, name="trial_id")


def observed_by_design(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials whose observation ended as the study meant: completed, pruned by ASHA or stopped
    by the guard. A crashed or unfinished trial ended early for no reason of its arm: left out of
    returns (it would set the common step for everyone) as it is censored in explosions."""
    return trials[trials["stop_reason"].isin([COMPLETED, "asha", *GUARD_STOPS])]


def common_step(curves: pd.DataFrame, trial_ids: Any) -> float:
    """The last env step every one of ``trial_ids`` reached with a finite evaluation: the
    smallest of their last evaluation steps. NaN when a trial has none (or none are given)."""
    wanted = set(trial_ids)
    last = evaluations(curves, wanted)[0].groupby("trial_id")[ENV_STEPS].max()
    return float(last.min()) if wanted and set(last.index) == wanted else math.nan


def return_at(curves: pd.DataFrame, step: float, trial_ids: Any = None) -> pd.Series:
    """Each trial's latest evaluation at or before ``step`` (by trial_id; NaN: none by then)."""
    rows, ids = evaluations(curves, trial_ids)
    latest = rows[rows[ENV_STEPS] <= step].groupby("trial_id")[EVAL_RETURN].last()
    return latest.reindex(ids).astype(float).rename(EVAL_RETURN)


def auc_to(curves: pd.DataFrame, step: float, trial_ids: Any = None) -> pd.Series:
    """Area under each trial's evaluation curve to ``step`` over the span, in return units: trapezoids
    over its evaluations at or before ``step``, the last held flat to ``step``, divided by (step -
    first evaluation step); its value if its only evaluation is at ``step``, NaN if none by then."""
    rows, ids = evaluations(curves, trial_ids)
    out = pd.Series(math.nan, index=ids, name="auc", dtype=float)
    for trial_id, group in rows[rows[ENV_STEPS] <= step].groupby("trial_id"):
        x, y = (group[column].to_numpy(dtype=float) for column in (ENV_STEPS, EVAL_RETURN))
        x, y, span = np.append(x, float(step)), np.append(y, y[-1]), float(step) - x[0]
        out[trial_id] = float(integrate.trapezoid(y, x) / span) if span > 0 else float(y[0])
    return out


def by_seed(trials: pd.DataFrame, arm: str, values: pd.Series | str) -> pd.Series:
    """One arm's ``values`` (a trial-table column, or a Series by trial_id) indexed by seed."""
    rows = trials[trials["arm"] == arm]
    series = rows[values] if isinstance(values, str) else rows["trial_id"].map(values)
    return pd.Series(series.to_numpy(), index=rows["seed"].astype(int).to_numpy(), name=arm)


# --- explosions, censored by ASHA -------------------------------------------------------------
def observed_to(trials: pd.DataFrame) -> pd.Series:
    """The step each trial's observation ends: its stop step, else its env steps."""
    return trials["stop_step"].astype(float).fillna(trials["env_steps"].astype(float))


def default_horizon(trials: pd.DataFrame) -> float:
    """The earliest end among completed trials; with none, the latest step ASHA pruned a trial at;
    NaN when neither (crashed, unfinished or exploded trials only: all but explosions censored)."""
    ends, reason = observed_to(trials), trials["stop_reason"]
    if (reason == COMPLETED).any():
        return float(ends[reason == COMPLETED].min())
    pruned = ends[reason == "asha"]  # a guard stop is an explosion: its step says nothing of the others
    return float(pruned.max()) if len(pruned) else math.nan


def explosion_outcome(trials: pd.DataFrame, horizon: float) -> pd.Series:
    """Per trial: True (exploded by ``horizon``), False (survived to it), NaN (censored)."""
    exploded = trials["exploded"].astype(bool) & ~(trials["explosion_step"].astype(float) > horizon)
    outcome = exploded.astype(object)
    outcome[~exploded & ~(observed_to(trials) >= horizon)] = math.nan  # an unknown end: censored
    return outcome


def explosion_counts(trials: pd.DataFrame, horizon: float | None = None, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per arm: trials, exploded, observed (exploded + survivors to the horizon), censored, the
    horizon and the rate exploded / observed with its Wilson interval (module docstring)."""
    step = default_horizon(trials) if horizon is None else float(horizon)
    rows = {}
    for arm, part in explosion_outcome(trials, step).groupby(trials["arm"], sort=False):
        k, n = int(part.dropna().astype(bool).sum()), int(part.notna().sum())
        rows[arm] = {"trials": len(part), "exploded": k, "observed": n, "censored": len(part) - n, "horizon": step,
                     "rate": k / n if n else math.nan, **dict(zip(("rate_low", "rate_high"), wilson(k, n, confidence)))}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("arm")


# --- coverage ---------------------------------------------------------------------------------
def coverage(
    draw: Callable[[np.random.Generator, int], tuple[Any, ...]], interval: Callable[..., Interval],
    truth: float, n_seeds: int, n_studies: int, rng: np.random.Generator,
) -> float:
    """The share of ``n_studies`` simulated studies whose ``interval(*draw(rng, n_seeds))`` holds
    ``truth`` (a NaN interval misses): ``draw`` makes one study's data from ``rng``."""
    hits = 0
    for _ in range(n_studies):
        low, high = interval(*draw(rng, n_seeds))
        hits += bool(low <= truth <= high)
    return hits / n_studies
