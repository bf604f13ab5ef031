"""The table maths on hand-made trial rows whose answers are known in advance."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import tables
from study.guard import GuardConfig


def trials_frame(rows: list[dict]) -> pd.DataFrame:
    """Trial-table rows with the columns the tables read; unspecified ones get neutral values."""
    defaults = {"seed": 0, "exploded": False, "explosion_step": math.nan, "env_steps": 1000, "stop_reason": "completed"}
    return pd.DataFrame([{**defaults, **row} for row in rows])


def arm(name: str, returns: list[float], explosion_steps: list[float] | None = None, **levels: str) -> list[dict]:
    """One arm's trials: a seed per return; an explosion step (NaN: none) per seed."""
    steps = explosion_steps or [math.nan] * len(returns)
    return [
        {"arm": name, "seed": seed, "final_return": r, "exploded": not math.isnan(s), "explosion_step": s, **levels}
        for seed, (r, s) in enumerate(zip(returns, steps, strict=True))
    ]


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    assert tables.iqm(np.arange(1.0, 9.0)) == 4.5  # middle of 1..8: 3, 4, 5, 6
    assert tables.iqm(np.array([0.0, 0.0, 1.0, 1000.0])) == 0.5  # one wild seed does not move it


def test_ablation_row_counts_means_and_explosions() -> None:
    trials = trials_frame(arm("baseline", [1, 2, 3, 4]) + arm("tau=1.0", [-5, -7, -9, -11], [1000, 1500, 2000, math.nan]))
    table = tables.ablation_table(trials)
    assert list(table.index) == ["baseline", "tau=1.0"]
    base, runaway = table.loc["baseline"], table.loc["tau=1.0"]
    assert (base["n_seeds"], base["return_mean"], base["return_iqm"]) == (4, 2.5, 2.5)
    assert (base["exploded"], base["explosion_rate"]) == (0, 0.0)
    assert math.isnan(base["median_explosion_step"])
    assert (runaway["exploded"], runaway["explosion_rate"], runaway["median_explosion_step"]) == (3, 0.75, 1500)
    assert runaway["env_steps"] == 4000
    assert base["return_mean_low"] <= 2.5 <= base["return_mean_high"]
    assert runaway["explosion_rate_low"] < 0.75 < runaway["explosion_rate_high"]


def test_trials_without_a_return_count_as_seeds_not_as_returns() -> None:
    trials = trials_frame(arm("baseline", [1.0, 3.0, math.nan], [math.nan, math.nan, 500]))
    row = tables.ablation_table(trials).loc["baseline"]
    assert (row["n_seeds"], row["n_returns"], row["return_mean"], row["exploded"]) == (3, 2, 2.0, 1)


def test_bootstrap_interval_covers_the_true_mean_at_its_level() -> None:
    """Over 200 data sets of 30 draws, the 95% intervals hold the true mean about 95% of the time."""
    rng = np.random.default_rng(1)
    hits = []
    for i in range(200):
        low, high = tables.bootstrap_ci([rng.normal(10.0, 3.0, size=30)], np.mean, seed=i)
        hits.append(low <= 10.0 <= high)
    assert 0.88 <= np.mean(hits) <= 0.99


def test_bootstrap_iqm_interval_contains_the_truth_and_narrows_with_seeds() -> None:
    rng = np.random.default_rng(2)
    few, many = rng.normal(5.0, 1.0, size=5), rng.normal(5.0, 1.0, size=200)
    few_ci, many_ci = tables.bootstrap_ci([few], tables.iqm), tables.bootstrap_ci([many], tables.iqm)
    assert many_ci[0] <= 5.0 <= many_ci[1]
    assert many_ci[1] - many_ci[0] < few_ci[1] - few_ci[0]


def test_one_seed_has_no_interval() -> None:
    assert all(math.isnan(v) for v in tables.bootstrap_ci([np.array([3.0])], np.mean))
    row = tables.ablation_table(trials_frame(arm("baseline", [3.0]))).loc["baseline"]
    assert row["return_mean"] == 3.0 and math.isnan(row["return_mean_low"])


def test_wilson_interval_matches_its_formula() -> None:
    z2 = 1.959963984540054**2
    assert tables.wilson_interval(0, 3) == pytest.approx((0.0, z2 / (3 + z2)))
    assert tables.wilson_interval(3, 3) == pytest.approx((3 / (3 + z2), 1.0))
    assert all(math.isnan(v) for v in tables.wilson_interval(0, 0))


def test_rate_difference_matches_newcombe_1998() -> None:
    """Newcombe (1998), Statistics in Medicine 17:873, table II, example (a), method 10."""
    diff, (low, high) = tables.rate_difference(56, 70, 48, 80)
    assert diff == pytest.approx(0.2)
    assert (low, high) == pytest.approx((0.0524, 0.3339), abs=5e-4)


def test_main_effects_average_over_the_other_factor() -> None:
    """2x2 design: a adds 10 to the return, b subtracts 10 and makes every seed explode.

    The (a=1, b=0) cell has four seeds, the others two: a pooled mean would give a an effect of
    11.7, the cell-averaged main effect is still exactly 10. Explosion effects are differences of
    the per-level rates (pooled), the ones the per-level table shows.
    """
    rows = (
        arm("a=0,b=0", [10, 12], a="0", b="0")
        + arm("a=1,b=0", [20, 22, 20, 22], a="1", b="0")
        + arm("a=0,b=1", [0, 2], [500, 700], a="0", b="1")
        + arm("a=1,b=1", [10, 12], [600, 800], a="1", b="1")
    )
    effects = tables.main_effects(trials_frame(rows), ["a", "b"])
    a, b = effects.loc[("a", "1")], effects.loc[("b", "1")]
    assert (a["reference"], a["return_effect"]) == ("0", pytest.approx(10.0))
    assert b["return_effect"] == pytest.approx(-10.0)
    assert a["return_effect_low"] <= 10.0 <= a["return_effect_high"]
    assert b["return_effect_low"] <= -10.0 <= b["return_effect_high"]
    assert a["explosion_effect"] == pytest.approx(2 / 6 - 2 / 4)
    assert b["explosion_effect"] == 1.0
    assert b["explosion_effect_low"] > 0  # four of four against none of six: clearly not zero


def test_factor_level_table_groups_by_each_factor() -> None:
    rows = arm("a=0,b=0", [1, 3], a="0", b="0") + arm("a=1,b=0", [5, 7], [100, math.nan], a="1", b="0")
    table = tables.factor_level_table(trials_frame(rows), ["a", "b"])
    assert list(table.index) == [("a", "0"), ("a", "1"), ("b", "0")]
    assert table.loc[("a", "1"), "return_mean"] == 6.0
    assert table.loc[("b", "0"), ("n_seeds")] == 4
    assert table.loc[("b", "0"), "explosion_rate"] == 0.25


def test_versus_baseline_differences() -> None:
    rows = arm("baseline", [10, 12, 14]) + arm("critic_l2=0.01", [4, 6, 8], [300, math.nan, math.nan])
    table = tables.versus_baseline(trials_frame(rows))
    row = table.loc["critic_l2=0.01"]
    assert row["return_diff"] == pytest.approx(-6.0)
    assert row["return_diff_low"] <= -6.0 <= row["return_diff_high"] < 0
    assert row["explosion_diff"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="arm 'baseline' not found; arms are"):
        tables.versus_baseline(trials_frame(arm("tau=0.01", [1, 2])))


def test_guard_replay_finds_the_step_the_guard_would_stop_at() -> None:
    steps = [500, 1000, 1500, 2000, 2500]
    assert tables.guard_replay(steps, [0.0, 0.2, 0.0, 0.2, 0.3]) == ("q_explosion", 2500)
    assert tables.guard_replay(steps, [math.nan, 0.0, math.inf, math.inf, 0.0]) == ("non_finite", 2000)
    reason, step = tables.guard_replay(steps, [0.0, 0.2, 0.05, 0.2, 0.05])
    assert reason is None and math.isnan(step)
    # A disabled guard in the study's config still gets a verdict: that is the point of replaying.
    assert tables.guard_replay(steps[:2], [0.5, 0.5], GuardConfig(enabled=False, patience=2)) == ("q_explosion", 1000)
    # A report with no actor step (NaN) neither offends nor clears, as in the trial and the scheduler.
    assert tables.guard_replay(steps[:3], [0.5, math.nan, 0.5]) == ("q_explosion", 1500)
    assert tables.guard_replay(steps[:1], [math.nan], GuardConfig(patience=1)) == (None, pytest.approx(math.nan, nan_ok=True))


def test_q_ratio_and_excess() -> None:
    assert tables.q_ratio(3.07e6, 20_000.0) == pytest.approx(153.5)  # the CARLA run
    assert math.isnan(tables.q_ratio(5.0, 0.0))  # no meaning for an upper end <= 0
    assert tables.q_excess(3.07e6, 82.8e3, -5_000.0, 20_000.0) == pytest.approx((3.07e6 - 20_000) / 25_000)
    assert tables.q_excess(-10.0, -4800.0, -1600.0, 0.0) == pytest.approx(2.0)  # runs away downward too
    assert math.isnan(tables.q_excess(1.0, 0.0, math.nan, math.nan))


def test_level_and_arm_order() -> None:
    assert tables.level_order(["1.0", "null", "0.01", "coupled", "0.01"]) == ["null", "0.01", "1.0", "coupled"]
    assert tables.arm_order(["tau=1.0", "baseline", "critic_l2=0.01"]) == ["baseline", "critic_l2=0.01", "tau=1.0"]
    assert tables.parse_level("null") is None and tables.parse_level("3") == 3 and tables.parse_level("x") == "x"


def _optuna_trials() -> pd.DataFrame:
    """Return rises with tau alone; Q explodes exactly when reward_clip is off."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        tau = float(rng.uniform(0.001, 0.05))
        clip = str(rng.choice(["null", "1.0"]))
        l2 = float(rng.uniform(0.0, 0.1))
        rows.append(
            {"arm": f"t{i}", "tau": str(tau), "reward_clip": clip, "critic_l2": str(l2), "final_return": 1000 * tau,
             "exploded": clip == "null", "best_return": 1000 * tau, "max_actor_q": 1.0}
        )
    return trials_frame(rows)


def test_param_importances_find_the_factor_that_matters() -> None:
    trials, factors = _optuna_trials(), ["tau", "reward_clip", "critic_l2"]
    on_return = tables.param_importances(trials, factors, "final_return")
    on_explosion = tables.param_importances(trials, factors, "exploded")
    assert on_return.idxmax() == "tau" and on_return["tau"] > 0.8
    assert on_explosion.idxmax() == "reward_clip" and on_explosion["reward_clip"] > 0.8
    assert tables.param_importances(trials.head(1), factors).empty


def test_best_configs_rank_bounded_trials_by_return() -> None:
    trials = _optuna_trials()
    best = tables.best_configs(trials, ["tau", "reward_clip"], k=3)
    assert len(best) == 3 and not (best["reward_clip"] == "null").any()
    assert best["final_return"].is_monotonic_decreasing
    assert best["final_return"].iloc[0] == trials.loc[~trials["exploded"], "final_return"].max()
