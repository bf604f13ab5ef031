"""The table maths on hand-made trials and evaluation curves whose answers are known in advance."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import plots, tables
from study import metrics as m
from study.guard import GuardConfig

BUDGET, EVAL_EVERY = 4000, 1000
T_975_3 = 3.182446305284263  # Student t quantile, 3 degrees of freedom


def trials_frame(rows: list[dict]) -> pd.DataFrame:
    """Trial-table rows with the columns the tables read; unspecified ones get neutral values."""
    defaults = {"seed": 0, "exploded": False, "explosion_step": math.nan, "env_steps": 1000, "stop_reason": "completed"}
    return pd.DataFrame([{**defaults, **row} for row in rows])


def arm(name: str, returns: list[float], explosion_steps: list[float] | None = None, ends: list[float] | None = None,
        gain: float = 0.0, seeds: list[int] | None = None, **levels: str) -> list[dict]:
    """One arm's trials, a seed per return. A trial ends at ``ends`` (default: its explosion step,
    where the guard stopped it, else the budget; earlier than both: ASHA pruned it), evaluated every
    1,000 steps: its return plus ``gain`` per evaluation after the first (NaN return: never evaluated)."""
    n = len(returns)
    rows = []
    for seed, ret, explosion, end in zip(seeds or range(n), returns, explosion_steps or [math.nan] * n, ends or [None] * n,
                                         strict=True):
        end = end or (BUDGET if math.isnan(explosion) else explosion)
        reason = "q_explosion" if end == explosion else "completed" if end >= BUDGET else "asha"
        evals = [] if math.isnan(ret) else [(x, ret + gain * (x // EVAL_EVERY - 1)) for x in range(EVAL_EVERY, int(end) + 1, EVAL_EVERY)]
        rows.append({"trial_id": f"{name}/{seed}", "arm": name, "seed": seed, "stop_reason": reason,
                     "stop_step": math.nan if reason == "completed" else end, "env_steps": end,
                     "exploded": not math.isnan(explosion), "explosion_step": explosion,
                     "final_return": evals[-1][1] if evals else math.nan, "evals": evals, **levels})
    return rows


def study(rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trial table and the curves (one row per evaluation) of ``arm`` rows."""
    curves = [{"trial_id": row["trial_id"], m.ENV_STEPS: x, m.EVAL_RETURN: y} for row in rows for x, y in row["evals"]]
    return trials_frame([{k: v for k, v in row.items() if k != "evals"} for row in rows]), pd.DataFrame(curves)


# --- ablation rows ----------------------------------------------------------------------------


def test_ablation_row_counts_means_and_explosions() -> None:
    trials, curves = study(arm("baseline", [1, 2, 3, 4]) + arm("tau=1.0", [-5, -7, -9, -11], [1000, 1500, 2000, math.nan]))
    table = tables.ablation_table(trials, curves)
    assert list(table.index) == ["baseline", "tau=1.0"]
    base, runaway = table.loc["baseline"], table.loc["tau=1.0"]
    assert (base["n_seeds"], base["return_step"], base["return_mean"], base["return_iqm"]) == (4, 4000, 2.5, 2.5)
    half = T_975_3 * np.std([1, 2, 3, 4], ddof=1) / 2  # the Student-t interval, not a bootstrap
    assert (base["return_mean_low"], base["return_mean_high"]) == pytest.approx((2.5 - half, 2.5 + half))
    assert not base["iqm_is_mean"]  # four seeds: one trimmed from each end
    assert (base["exploded"], base["observed"], base["explosion_rate"]) == (0, 4, 0.0)
    assert math.isnan(base["median_explosion_step"])
    # The guard stopped three trials; the earliest was last evaluated at 1,000 steps.
    assert (runaway["return_step"], runaway["return_mean"]) == (1000, -8.0)
    assert (runaway["exploded"], runaway["observed"], runaway["censored"], runaway["horizon"]) == (3, 4, 0, 4000)
    assert (runaway["explosion_rate"], runaway["median_explosion_step"]) == (0.75, 1500)
    assert runaway["explosion_rate_low"] < 0.75 < runaway["explosion_rate_high"]
    assert runaway["env_steps"] == 1000 + 1500 + 2000 + 4000


def test_returns_are_read_at_the_common_step_and_a_pruned_trial_is_censored() -> None:
    """ASHA stopped seed 2 at 2,000 steps: every seed is read at 2,000 (returns 100, 110, 120), not at
    its own end (300, 310, 120); seed 2 never reached the 4,000-step horizon unexploded: censored."""
    trials, curves = study(arm("baseline", [0, 10, 20], ends=[4000, 4000, 2000], gain=100))
    row = tables.ablation_table(trials, curves).loc["baseline"]
    assert (row["return_step"], row["return_mean"]) == (2000, 110.0)
    assert (row["exploded"], row["observed"], row["censored"], row["horizon"]) == (0, 2, 1, 4000)
    assert row["explosion_rate"] == 0.0


def test_the_iqm_of_fewer_than_four_seeds_is_flagged_as_the_mean() -> None:
    trials, curves = study(arm("baseline", [0, 1, 100]) + arm("tau=1.0", [0, 0, 1, 1000]))
    table = tables.ablation_table(trials, curves)
    assert table.loc["baseline", "iqm_is_mean"] and table.loc["baseline", "return_iqm"] == pytest.approx(101 / 3)
    assert not table.loc["tau=1.0", "iqm_is_mean"] and table.loc["tau=1.0", "return_iqm"] == 0.5


def test_trials_without_a_return_count_as_seeds_not_as_returns() -> None:
    """Seed 2 exploded at 500 steps, before its first evaluation: it has no return, and no say in
    the common step, but it is a seed and an explosion."""
    trials, curves = study(arm("baseline", [1.0, 3.0, math.nan], [math.nan, math.nan, 500]))
    row = tables.ablation_table(trials, curves).loc["baseline"]
    assert (row["n_seeds"], row["n_returns"], row["return_step"], row["return_mean"]) == (3, 2, 4000, 2.0)
    assert (row["exploded"], row["observed"]) == (1, 3)


def test_one_seed_has_no_interval() -> None:
    row = tables.ablation_table(*study(arm("baseline", [3.0]))).loc["baseline"]
    assert row["return_mean"] == 3.0 and math.isnan(row["return_mean_low"]) and row["iqm_is_mean"]


def test_factor_level_table_groups_by_each_factor() -> None:
    rows = arm("a=0,b=0", [1, 3], a="0", b="0") + arm("a=1,b=0", [5, 7], [2000, math.nan], a="1", b="0")
    table = tables.factor_level_table(*study(rows), ["a", "b"])
    assert list(table.index) == [("a", "0"), ("a", "1"), ("b", "0")]
    assert table.loc[("a", "1"), "return_mean"] == 6.0
    assert table.loc[("b", "0"), "n_seeds"] == 4 and table.loc[("b", "0"), "return_step"] == 2000
    assert table.loc[("b", "0"), "explosion_rate"] == 0.25


# --- comparisons ------------------------------------------------------------------------------

SEED_EFFECTS = [100.0, 500.0, -300.0, 900.0, 0.0]  # seeds differ by hundreds; the arm adds about 10


def test_versus_baseline_pairs_by_seed_which_narrows_the_interval() -> None:
    arm_returns = [r + d for r, d in zip(SEED_EFFECTS, [10.0, 12.0, 8.0, 11.0, 9.0], strict=True)]
    paired = tables.versus_baseline(*study(arm("baseline", SEED_EFFECTS) + arm("tau=0.01", arm_returns))).loc["tau=0.01"]
    assert (paired["return_paired"], paired["return_seeds"], paired["return_step"]) == (True, 5, 4000)
    assert paired["return_diff"] == pytest.approx(10.0) and 0 < paired["return_diff_low"] < 10 < paired["return_diff_high"]
    assert paired["explosion_paired"] and paired["verdict"] == "no detectable effect on runaways, better return"
    other_seeds = arm("baseline", SEED_EFFECTS) + arm("tau=0.01", arm_returns, seeds=[10, 11, 12, 13, 14])
    unpaired = tables.versus_baseline(*study(other_seeds)).loc["tau=0.01"]
    assert not unpaired["return_paired"] and not unpaired["explosion_paired"] and unpaired["return_seeds"] == 10
    assert unpaired["return_diff_low"] < 0 < unpaired["return_diff_high"]
    paired_width, unpaired_width = (row["return_diff_high"] - row["return_diff_low"] for row in (paired, unpaired))
    assert paired_width * 100 < unpaired_width


def test_versus_baseline_counts_explosions_paired_and_reads_returns_where_both_arms_are() -> None:
    """Every baseline seed runs away at 2,000 steps, no arm seed does: returns are compared at
    2,000, and 0/5 against 5/5 on the same seeds is a paired difference that excludes 0."""
    rows = arm("baseline", SEED_EFFECTS, [2000] * 5) + arm("critic_l2=0.01", SEED_EFFECTS, gain=50)
    row = tables.versus_baseline(*study(rows)).loc["critic_l2=0.01"]
    counts = ("exploded", "observed", "reference_exploded", "reference_observed", "censored", "horizon")
    assert tuple(row[list(counts)]) == (0, 5, 5, 5, 0, 4000)
    assert (row["explosion_diff"], row["explosion_paired"]) == (-1.0, True) and row["explosion_diff_high"] < 0
    assert (row["return_step"], row["return_diff"]) == (2000, pytest.approx(50.0))  # +50 by the second evaluation
    assert row["verdict"] == "prevents the runaway, better return"


def test_versus_baseline_needs_the_baseline_and_may_have_no_other_arm() -> None:
    with pytest.raises(ValueError, match=r"arm\(s\) \['baseline'\] not found; arms are"):
        tables.versus_baseline(*study(arm("tau=0.01", [1, 2])))
    alone = tables.versus_baseline(*study(arm("baseline", [1, 2])))
    assert alone.empty and alone.index.name == "arm"


def test_with_regimes_each_arm_is_compared_with_its_own_regimes_baseline() -> None:
    """The same remedy in two regimes: against the healthy baseline it changes nothing, against
    the runaway baseline (every seed exploded) it prevents the runaway. Each regime's baseline
    leads its arms, regime by regime."""
    rows = (arm("runaway/baseline", SEED_EFFECTS, [2000] * 5) + arm("runaway/critic_l2=0.01", SEED_EFFECTS)
            + arm("healthy/baseline", SEED_EFFECTS) + arm("healthy/critic_l2=0.01", SEED_EFFECTS))
    versus = tables.versus_baseline(*study(rows))
    assert list(versus.index) == ["healthy/critic_l2=0.01", "runaway/critic_l2=0.01"]
    assert versus.loc["runaway/critic_l2=0.01", "reference_exploded"] == 5
    assert versus.loc["runaway/critic_l2=0.01", "verdict"].startswith("prevents the runaway")
    assert versus.loc["healthy/critic_l2=0.01", "reference_exploded"] == 0
    assert versus.loc["healthy/critic_l2=0.01", "return_diff"] == 0.0
    assert tables.arm_order([r["arm"] for r in rows]) == [
        "healthy/baseline", "healthy/critic_l2=0.01", "runaway/baseline", "runaway/critic_l2=0.01"]
    # A regime whose baseline did not run leaves out its own arms only.
    without = [r for r in rows if r["arm"] != "runaway/baseline"]
    assert list(tables.versus_baseline(*study(without)).index) == ["healthy/critic_l2=0.01"]
    assert tables.missing_baselines([r["arm"] for r in without]) == ["runaway/baseline"]
    with pytest.raises(ValueError, match=r"\['healthy/baseline', 'runaway/baseline'\] not found"):
        tables.versus_baseline(*study([r for r in without if r["arm"] != "healthy/baseline"]))


def factorial(seeds: int = 3, unmatched: tuple[int, ...] = ()) -> list[dict]:
    """2x2: a adds 10 to the return, b takes 10 and makes every seed run away at 2,000 steps, seeds
    add SEED_EFFECTS, and each (seed, cell) some noise. Cell (a=1, b=0) also has ``unmatched`` seeds
    with wild returns and no partner in any other cell."""
    noise = [[0.0, 1.0, -1.0, 2.0], [1.0, 0.0, 2.0, -1.0], [-1.0, 2.0, 0.0, 1.0]]
    rows = []
    for i, (a, b) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        returns = [SEED_EFFECTS[s] + 10 * a - 10 * b + noise[s][i] for s in range(seeds)]
        seed_list = list(range(seeds)) + (list(unmatched) if (a, b) == (1, 0) else [])
        returns += [5000.0] * (len(seed_list) - seeds)
        explosions = [2000.0 if b else math.nan] * len(seed_list)
        rows += arm(f"a={a},b={b}", returns, explosions, seeds=seed_list, a=str(a), b=str(b))
    return rows


def test_main_effects_are_paired_by_seed_and_cell_and_average_over_the_other_factor() -> None:
    """Seeds 3 and 4 exist only in cell (a=1, b=0): without partners they drop out, where a pooled
    mean would move a's effect by hundreds. Per seed, a's effect is the mean over b of the cell
    differences; the interval is Student's t over the three seeds (the seed effects cancel)."""
    effects = tables.main_effects(*study(factorial(unmatched=(3, 4))), ["a", "b"])
    noise = np.array([[0.0, 1.0, -1.0, 2.0], [1.0, 0.0, 2.0, -1.0], [-1.0, 2.0, 0.0, 1.0]])
    per_seed = 10 + ((noise[:, 1] - noise[:, 0]) + (noise[:, 3] - noise[:, 2])) / 2
    a, b = effects.loc[("a", "1")], effects.loc[("b", "1")]
    assert (a["reference"], a["return_paired"], a["return_seeds"], a["return_step"]) == ("0", True, 3, 2000)
    assert a["return_diff"] == pytest.approx(per_seed.mean())
    half = 4.302652729911275 * per_seed.std(ddof=1) / math.sqrt(3)
    assert (a["return_diff_low"], a["return_diff_high"]) == pytest.approx((per_seed.mean() - half, per_seed.mean() + half))
    assert b["return_diff"] == pytest.approx(-10 + np.mean(((noise[:, 2] - noise[:, 0]) + (noise[:, 3] - noise[:, 1])) / 2))
    # Explosions: a pair per seed and cell with both outcomes observed, Newcombe paired.
    counts = ("exploded", "observed", "reference_exploded", "reference_observed")
    assert tuple(b[list(counts)]) == (6, 6, 0, 6) and b["explosion_paired"] and b["explosion_seeds"] == 3
    assert b["explosion_diff"] == 1.0 and b["explosion_diff_low"] > 0
    assert (a["explosion_diff"], a["explosion_paired"]) == (0.0, True)
    assert b["verdict"] == "more runaways, worse return"


def test_main_effects_without_pairs_are_unpaired() -> None:
    """Level a=1 ran other seeds than a=0: nothing pairs, the comparison is unpaired (Welch's t over
    the seeds, Newcombe's hybrid score over the trials) and the table says so."""
    rows = arm("a=0", [1.0, 2.0, 3.0], a="0") + arm("a=1", [4.0, 5.0, 6.0], [2000.0] * 3, seeds=[7, 8, 9], a="1")
    row = tables.main_effects(*study(rows), ["a"]).loc[("a", "1")]
    assert not row["explosion_paired"] and not row["return_paired"] and row["return_seeds"] == 6
    assert row["return_diff"] == 3.0 and row["return_diff_low"] < 3.0 < row["return_diff_high"]
    assert (row["exploded"], row["observed"], row["reference_observed"], row["explosion_seeds"]) == (3, 3, 3, 6)
    assert row["explosion_diff"] == 1.0 and row["explosion_diff_low"] > 0


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


def test_arm_rows_also_read_returns_at_the_step_common_to_their_regime() -> None:
    """An arm stopped early sets the shared step of its own regime's arms, not of another regime's."""
    rows = (arm("fast/baseline", [1, 2, 3], gain=10.0) + arm("fast/tau=1.0", [-5, -7, -9], [1000, 3000, 3000])
            + arm("slow/baseline", [4, 5, 6], gain=1.0) + arm("slow/tau=0.5", [7, 8, 9]))  # fmt: skip
    table = tables.ablation_table(*study(rows))
    assert list(table["shared_step"]) == [1000, 1000, 4000, 4000]
    assert list(table["return_step"]) == [4000, 1000, 4000, 4000]  # each arm's own
    assert table.loc["fast/baseline", "shared_return_mean"] == 2.0  # its first evaluations, not 32 at 4,000
    assert table.loc["slow/baseline", "shared_return_mean"] == table.loc["slow/baseline", "return_mean"] == 8.0
    half = 4.302652729911275 * 1.0 / np.sqrt(3)  # Student t, 2 degrees of freedom; sd of 7, 8, 9 is 1
    low, high = table.loc["slow/tau=0.5", ["shared_return_mean_low", "shared_return_mean_high"]]
    assert (low, high) == pytest.approx((8.0 - half, 8.0 + half))


def test_each_regime_counts_explosions_by_its_own_horizon() -> None:
    """Regimes with budgets of their own: a 2,000-step regime's completed trials must not cut the
    4,000-step regime's horizon, where its explosions at 2,500 to 3,500 steps would go uncounted."""
    short = [{**row, "stop_reason": "completed", "stop_step": math.nan}
             for row in arm("short/baseline", [1, 2, 3], ends=[2000] * 3) + arm("short/l2", [1, 2, 3], ends=[2000] * 3)]
    rows = arm("long/baseline", [1, 2, 3], [2500, 3000, 3500]) + arm("long/l2", [1, 2, 3]) + short
    table = tables.ablation_table(*study(rows))
    assert table.loc["long/baseline", ["exploded", "observed", "horizon"]].tolist() == [3, 3, 4000]
    assert table.loc["long/l2", ["exploded", "observed", "horizon"]].tolist() == [0, 3, 4000]
    assert table.loc["short/l2", ["exploded", "observed", "horizon"]].tolist() == [0, 3, 2000]
    labels = [t.get_text() for t in plots.explosion_figure(table).axes[0].get_yticklabels()]
    assert labels[0] == "long/baseline (by 4,000)" and labels[-1] == "short/l2 (by 2,000)"

