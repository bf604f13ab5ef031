"""One line per arm against its baseline, claiming only what the intervals of ``analysis.stats``
exclude: explosions by a common horizon (censored trials counted apart), returns at a common step,
paired by seed where both arms have the same seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis.stats import (
    Difference,
    RateDifference,
    auc_to,
    by_seed,
    common_step,
    default_horizon,
    evaluations,
    explosion_outcome,
    mean_difference,
    observed_by_design,
    rate_difference,
    return_at,
)
from study.plan import BASELINE

MIN_SEEDS = 3  # fewer seeds than this (pairs, or per arm) and a verdict says "too few seeds"


@dataclass(frozen=True)
class ArmComparison:
    """An arm against the baseline: explosions by ``horizon`` (``censored``: trials of the two
    arms censored before it), returns (``measure``: "return" or "auc") at ``step``."""

    arm: str
    rate: RateDifference
    ret: Difference | None
    step: float
    horizon: float
    censored: int
    measure: str = "return"


def compare_arm(
    trials: pd.DataFrame, curves: pd.DataFrame, arm: str, baseline: str = BASELINE, *, step: float | None = None,
    horizon: float | None = None, measure: str = "return", pair_common: bool = False,
) -> ArmComparison:
    """``arm`` against ``baseline``: explosions by ``horizon`` (default ``default_horizon`` of the two
    arms) and ``return_at`` (or ``auc_to``) ``step`` (default ``common_step`` of the two arms'
    evaluated trials)."""
    both = trials[trials["arm"].isin([arm, baseline])]
    # The same seeds in both arms: paired, on the seeds whose outcome both observed.
    pair_common = pair_common or set(both.loc[both["arm"] == arm, "seed"]) == set(both.loc[both["arm"] == baseline, "seed"])
    horizon = default_horizon(both) if horizon is None else float(horizon)
    outcome = both.assign(outcome=explosion_outcome(both, horizon))
    rate = rate_difference(by_seed(outcome, arm, "outcome"), by_seed(outcome, baseline, "outcome"), pair_common=pair_common)
    ids = set(evaluations(curves, observed_by_design(both)["trial_id"])[0]["trial_id"])
    step = common_step(curves, ids) if step is None else float(step)
    ret = None
    if math.isfinite(step):
        values = (auc_to if measure == "auc" else return_at)(curves, step, ids)
        ret = mean_difference(by_seed(both, arm, values), by_seed(both, baseline, values), pair_common=pair_common)
        ret = ret if ret.n_arm and ret.n_baseline else None  # one side has no return to compare
    return ArmComparison(arm, rate, ret, step, horizon, int(outcome["outcome"].isna().sum()), measure)


def span(estimate: float, low: float, high: float, digits: int | None = None) -> str:
    """``+12 [-40, 70]``: two significant digits of the interval's width unless ``digits`` (verdicts, tables)."""
    if not math.isfinite(width := high - low):
        return f"{estimate:+.2f} [no interval]"
    digits = digits if digits is not None else max(0, 1 - math.floor(math.log10(width))) if width > 0 else 2
    return f"{estimate:+.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _enough(d: Difference, min_seeds: int) -> bool:
    return (len(d.seeds) if d.paired else min(d.n_arm, d.n_baseline)) >= min_seeds and math.isfinite(d.high - d.low)


def verdict(c: ArmComparison, min_seeds: int = MIN_SEEDS) -> str:
    """The closing phrase, claiming only what an interval excludes. Rate interval below 0:
    "prevents the runaway" if the arm exploded none, else "fewer runaways"; above 0: "more
    runaways"; else "no detectable effect on runaways". Return interval above 0: "better return";
    below 0: "worse return"; else "no detectable cost" after fewer runaways, "no detectable effect
    on return" otherwise. Under ``min_seeds`` seeds (pairs; per arm unpaired): "too few seeds"."""
    r, ret = c.rate, c.ret
    fewer = _enough(r, min_seeds) and r.high < 0
    if not _enough(r, min_seeds):
        first = "too few seeds to judge runaways"
    elif fewer:
        first = "prevents the runaway" if r.exploded_arm == 0 else "fewer runaways"
    else:
        first = "more runaways" if r.low > 0 else "no detectable effect on runaways"
    if ret is None:
        return first
    if not _enough(ret, min_seeds):
        return f"{first}, too few seeds to judge return"
    if ret.low > 0 or ret.high < 0:
        return f"{first}, {'better' if ret.low > 0 else 'worse'} return"
    return f"{first}, {'no detectable cost' if fewer else 'no detectable effect on return'}"


def verdict_line(c: ArmComparison, min_seeds: int = MIN_SEEDS) -> str:
    """One line, e.g. ``critic_l2=0.01: exploded 0/5 vs 5/5 by 16,000 steps (paired on 5 seeds,
    difference -1.00 [-1.00, -0.39]); return at 16,000 steps +12 [-40, 70]: prevents the runaway,
    no detectable cost``. Denominators count the trials observed to the horizon, and when paired
    only the seeds both arms observed (``paired on N seeds``); censored trials are counted and the
    horizon stated; "unpaired" marks a comparison on different seed sets."""
    r = c.rate
    by = f"by {c.horizon:,.0f} steps" if math.isfinite(c.horizon) else "with no common horizon"
    censored = f", {c.censored} censored" if c.censored else ""
    text = f"{c.arm}: exploded {r.exploded_arm}/{r.n_arm} vs {r.exploded_baseline}/{r.n_baseline} {by}{censored}"
    pairing = f"paired on {len(r.seeds)} seed{'' if len(r.seeds) == 1 else 's'}," if r.paired else "unpaired"
    text += f" ({pairing} difference {span(r.estimate, r.low, r.high, digits=2)})"
    if c.ret is not None:
        what = "return at" if c.measure == "return" else "mean return (area under the curve) to"
        text += f"; {what} {c.step:,.0f} steps {span(c.ret.estimate, c.ret.low, c.ret.high)}{'' if c.ret.paired else ' (unpaired)'}"
    return f"{text}: {verdict(c, min_seeds)}"
