"""analysis.stats on small hand-made cases whose answers are known, and coverage by simulation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pytest

from analysis import stats as s
from analysis import verdicts as v

T_975_2 = 4.302652729911275  # Student t quantile, 2 degrees of freedom


# --- intervals --------------------------------------------------------------------------------


def test_t_interval_by_hand() -> None:
    low, high = s.t_interval([1.0, 2.0, 3.0, math.nan])  # mean 2, sd 1, NaN dropped
    assert (low, high) == pytest.approx((2 - T_975_2 / math.sqrt(3), 2 + T_975_2 / math.sqrt(3)))
    assert all(math.isnan(v) for v in s.t_interval([5.0]))


def test_wilson_interval_matches_its_formula() -> None:
    z2 = 1.959963984540054**2
    assert s.wilson(0, 3) == pytest.approx((0.0, z2 / (3 + z2)))
    assert s.wilson(3, 3) == pytest.approx((3 / (3 + z2), 1.0))
    assert all(math.isnan(v) for v in s.wilson(0, 0))


def test_newcombe_unpaired_matches_newcombe_1998() -> None:
    """Newcombe (1998), Statistics in Medicine 17:873, table II, example (a), method 10."""
    diff, (low, high) = s.newcombe_unpaired(56, 70, 48, 80)
    assert diff == pytest.approx(0.2)
    assert (low, high) == pytest.approx((0.0524, 0.3339), abs=5e-4)


def test_newcombe_paired_matches_the_published_example() -> None:
    """Fagerland, Lydersen & Laake (2017), ch. 8, Cavo et al. (2012): 59, 6, 16, 80 pairs."""
    d, (low, high) = s.newcombe_paired(59, 6, 16, 80)
    assert (round(d, 4), round(low, 4), round(high, 4)) == (-0.0621, -0.1186, -0.0046)


def test_newcombe_paired_agrees_with_wald_in_a_large_sample() -> None:
    """Agresti's approval ratings (794, 150, 86, 570): Wald gives 0.040 [0.021, 0.059]."""
    d, (low, high) = s.newcombe_paired(794, 150, 86, 570)
    assert d == pytest.approx(0.04)
    assert (low, high) == pytest.approx((0.0213, 0.0587), abs=0.001)


def test_newcombe_paired_properties_on_every_table_of_five_pairs() -> None:
    n = 5
    for both in range(n + 1):
        for only1 in range(n + 1 - both):
            for only2 in range(n + 1 - both - only1):
                neither = n - both - only1 - only2
                d, (low, high) = s.newcombe_paired(both, only1, only2, neither)
                assert -1 <= low <= d <= high <= 1
                assert d == pytest.approx((only1 - only2) / n)
                swapped, (sl, sh) = s.newcombe_paired(both, only2, only1, neither)
                assert (swapped, sl, sh) == pytest.approx((-d, -high, -low))
                if only1 == only2 == 0:  # identical outcomes on every seed: 0 stays inside
                    assert low < 0 < high


def test_iqm_flags_that_three_seeds_trim_nothing() -> None:
    three = s.iqm([0.0, 1.0, 100.0])
    assert three.value == pytest.approx(101 / 3) and three.is_mean and three.trimmed_each_side == 0
    four = s.iqm([0.0, 0.0, 1.0, 1000.0])
    assert (four.value, four.is_mean, four.trimmed_each_side, four.n) == (0.5, False, 1, 4)


# --- pairing ----------------------------------------------------------------------------------


def test_pairing_removes_large_seed_effects() -> None:
    """Seeds differ by hundreds, the arm adds about 10: only the paired interval excludes 0."""
    base = pd.Series([100.0, 500.0, -300.0, 900.0, 0.0], index=[0, 1, 2, 3, 4])
    arm = base + [10.0, 12.0, 8.0, 11.0, 9.0]
    paired = s.mean_difference(arm, base)
    unpaired = s.mean_difference(arm.set_axis([10, 11, 12, 13, 14]), base)
    assert paired.paired and paired.seeds == (0, 1, 2, 3, 4) and paired.method == "paired t"
    assert paired.estimate == pytest.approx(10.0) and 0 < paired.low < 10 < paired.high
    assert not unpaired.paired and unpaired.method == "Welch t" and unpaired.low < 0 < unpaired.high
    assert (paired.high - paired.low) * 100 < unpaired.high - unpaired.low


def test_different_seed_sets_fall_back_to_unpaired() -> None:
    arm = pd.Series([1.0, 2.0, 3.0, 4.0], index=[0, 1, 2, 3])
    base = pd.Series([0.0, 1.0, 2.0, 9.0], index=[1, 2, 3, 4])
    d = s.mean_difference(arm, base)
    assert not d.paired and d.seeds == (0, 1, 2, 3, 4) and (d.n_arm, d.n_baseline) == (4, 4)
    assert d.estimate == pytest.approx(2.5 - 3.0)
    common = s.mean_difference(arm, base, pair_common=True)
    assert common.paired and common.seeds == (1, 2, 3) and common.estimate == pytest.approx(2.0)
    assert not s.mean_difference(arm, base.set_axis([7, 8, 9, 10]), pair_common=True).paired
    # A trial without a return leaves its seed out, which unpairs the comparison.
    assert not s.mean_difference(arm, arm.where(arm.index != 2) - 1).paired

    rate = s.rate_difference(pd.Series([False, False, True], index=[0, 1, 2]), pd.Series([True, True], index=[5, 6]))
    assert not rate.paired and rate.method == "Newcombe hybrid score" and rate.seeds == (0, 1, 2, 5, 6)
    assert (rate.exploded_arm, rate.n_arm, rate.exploded_baseline, rate.n_baseline) == (1, 3, 2, 2)
    assert rate.estimate == pytest.approx(1 / 3 - 1)


# --- returns at a common budget ---------------------------------------------------------------


def curves_frame(points: Mapping[str, Sequence[tuple[float, float]]]) -> pd.DataFrame:
    rows = [{"trial_id": t, "env_steps": x, s.EVAL_RETURN: y} for t, series in points.items() for x, y in series]
    return pd.DataFrame(rows)


def test_report_rows_that_repeat_an_evaluation_are_not_evaluations() -> None:
    """Reports carry the latest evaluation and the step it ran at: a trial the guard stopped at
    5,500 last evaluated at 4,000, so that is the step its return is read at."""
    curves = pd.DataFrame([
        {"trial_id": "stopped", "env_steps": x, s.EVAL_RETURN: y, s.EVAL_STEP: e}
        for x, y, e in [(500, math.nan, math.nan), (4000, -300.0, 4000), (4500, -300.0, 4000), (5500, -300.0, 4000)]
    ] + [{"trial_id": "done", "env_steps": x, s.EVAL_RETURN: -100.0 + x / 100, s.EVAL_STEP: x} for x in (4000, 8000)])
    assert s.common_step(curves, ["stopped", "done"]) == 4000
    assert s.return_at(curves, 4000).to_dict() == {"done": -60.0, "stopped": -300.0}


def test_common_step_and_the_return_there() -> None:
    curves = curves_frame({
        "done": [(0, -900), (4000, -500), (8000, -300), (12000, -200), (16000, -150)],
        "asha": [(0, -950), (4000, -700), (8000, -650)],
        "odd": [(0, -800), (7000, -400), (9000, -350), (10000, math.nan)],  # last report: no eval
        "none": [(0, math.nan)],
    })  # fmt: skip
    assert s.common_step(curves, ["done", "asha", "odd"]) == 8000
    assert s.common_step(curves, ["done", "odd"]) == 9000
    assert math.isnan(s.common_step(curves, ["done", "none"]))
    at = s.return_at(curves, 8000, ["done", "asha", "odd", "none"])
    assert at[["done", "asha", "odd"]].tolist() == [-300, -650, -400]  # odd: its 7,000-step eval
    assert math.isnan(at["none"])


def test_area_under_the_curve_is_in_return_units() -> None:
    curves = curves_frame({"a": [(0, 0.0), (1000, 10.0), (2000, 30.0), (3000, 100.0)], "b": [(2000, 7.0)]})
    auc = s.auc_to(curves, 2000)
    assert auc["a"] == pytest.approx((0.5 * 1000 * 10 + 0.5 * 1000 * 40) / 2000)  # 12.5
    assert auc["b"] == 7.0  # one point, at the step
    assert s.auc_to(curves, 2500)["a"] == pytest.approx((25000 + 500 * 30) / 2500)  # 30 held to 2,500
    assert s.auc_to(curves, 500)["a"] == 0.0 and math.isnan(s.auc_to(curves, 500)["b"])


# --- censoring --------------------------------------------------------------------------------


def trial(arm: str, seed: int, reason: str, stop: float, explosion: float = math.nan) -> dict:
    return {"trial_id": f"{arm}/{seed}", "arm": arm, "seed": seed, "stop_reason": reason, "stop_step": stop,
            "env_steps": stop, "exploded": not math.isnan(explosion), "explosion_step": explosion}


def test_an_asha_pruned_trial_is_censored_not_a_survivor() -> None:
    trials = pd.DataFrame([
        trial("arm", 0, "completed", 16000),
        trial("arm", 1, "q_explosion", 3000, 3000),
        trial("arm", 2, "asha", 8000),  # pruned before any explosion: censored at 8,000
        trial("arm", 3, "asha", 8000, 6000),  # the guard replay saw it explode before the prune
        trial("arm", 4, "completed", 16000, 12000),  # exploded late (guard off)
    ])  # fmt: skip
    assert s.default_horizon(trials) == 16000
    row = s.explosion_counts(trials).loc["arm"]
    assert (row["trials"], row["exploded"], row["observed"], row["censored"], row["horizon"]) == (5, 3, 4, 1, 16000)
    assert row["rate"] == 0.75 and row["rate_low"] < 0.75 < row["rate_high"]
    early = s.explosion_counts(trials, horizon=8000).loc["arm"]  # all observed to 8,000
    assert (early["exploded"], early["observed"], early["censored"]) == (2, 5, 0)  # seed 4: survivor to 8,000
    # The default horizon: a step every completed trial reached; with none completed, the latest end.
    shorter = pd.concat([trials, pd.DataFrame([trial("arm", 5, "completed", 12000)])], ignore_index=True)
    assert s.default_horizon(shorter) == 12000
    assert s.default_horizon(trials[trials["stop_reason"] != "completed"]) == 8000


def test_trials_that_crashed_or_never_finished_survive_nothing() -> None:
    """No trial completed nor was stopped by ASHA or the guard: no horizon, every trial censored."""
    crashed = pd.DataFrame([trial("arm", 0, "error", 0), trial("arm", 1, None, 0)])  # type: ignore[arg-type]
    assert math.isnan(s.default_horizon(crashed))
    row = s.explosion_counts(crashed).loc["arm"]
    assert (row["exploded"], row["observed"], row["censored"]) == (0, 0, 2)


# --- verdicts ---------------------------------------------------------------------------------


def study(arm_returns: list[float], pruned_seed: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Five seeds. The baseline explodes at 4,000 + 500 seed (its last eval at 4,000); the arm runs
    16,000 steps, except ``pruned_seed``, which ASHA stops at 8,000."""
    rows, points = [], {}
    for seed in range(5):
        stop = 4000 + 500 * seed
        rows.append(trial("baseline", seed, "q_explosion", stop, stop))
        points[f"baseline/{seed}"] = [(0, -1000.0), (2000, -600.0 + 10 * seed), (4000, -500.0 + 10 * seed)]
        end = 8000 if seed == pruned_seed else 16000
        rows.append(trial("critic_l2=0.01", seed, "asha" if seed == pruned_seed else "completed", end))
        evals = [(x, -500.0 + 10 * seed + (arm_returns[seed] if x == 4000 else 0.0)) for x in range(0, end + 1, 2000)]
        points[f"critic_l2=0.01/{seed}"] = evals
    return pd.DataFrame(rows), curves_frame(points)


def test_verdict_prevents_the_runaway_at_no_detectable_cost() -> None:
    c = v.compare_arm(*study([10.0, -5.0, 20.0, 0.0, -15.0]), "critic_l2=0.01")
    assert c.ret is not None and (c.step, c.horizon, c.censored, c.rate.paired, c.ret.paired) == (4000, 16000, 0, True, True)
    assert v.verdict_line(c) == (
        "critic_l2=0.01: exploded 0/5 vs 5/5 by 16,000 steps (paired on 5 seeds, difference -1.00 [-1.00, -0.39]); "
        "return at 4,000 steps +2 [-15, 19]: prevents the runaway, no detectable cost"
    )
    auc = v.compare_arm(*study([10.0, -5.0, 20.0, 0.0, -15.0]), "critic_l2=0.01", measure="auc")
    # Per seed: arm a + r/4 (a = -500 + 10 seed, r its 4,000-step gain), baseline -675 + 7.5 seed.
    assert auc.ret is not None and auc.ret.estimate == pytest.approx(175 + 2.5 * 2 + 2.0 / 4)
    assert "; mean return (area under the curve) to 4,000 steps +180.5 [176.0, 185.0]:" in v.verdict_line(auc)


def test_verdict_with_a_censored_seed_stays_paired_on_the_seeds_both_observed() -> None:
    """Both arms ran the same seeds: ASHA censoring one arm's seed 4 drops that pair, not the pairing."""
    c = v.compare_arm(*study([10.0, -5.0, 20.0, 0.0, -15.0], pruned_seed=4), "critic_l2=0.01")
    line = v.verdict_line(c)
    assert line.startswith("critic_l2=0.01: exploded 0/4 vs 4/4 by 16,000 steps, 1 censored (paired on 4 seeds, difference")
    assert c.rate.paired and c.rate.seeds == (0, 1, 2, 3)
    assert c.ret is not None and c.ret.paired and c.ret.seeds == (0, 1, 2, 3, 4)  # every seed has a return at 4,000
    assert line.endswith(": prevents the runaway, no detectable cost")


def test_a_crashed_trial_sets_no_common_step_and_no_horizon_reads_as_such() -> None:
    trials, curves = study([10.0, -5.0, 20.0, 0.0, -15.0])
    crashed = trials.index[(trials["arm"] == "critic_l2=0.01") & (trials["seed"] == 0)]
    trials.loc[crashed, ["stop_reason", "stop_step", "env_steps"]] = ["error", 2000, 2000]
    c = v.compare_arm(trials, curves, "critic_l2=0.01")
    assert c.step == 4000 and c.ret is not None and c.ret.seeds == (1, 2, 3, 4)  # not pulled to 2,000
    nothing = trials.assign(stop_reason="error")
    line = v.verdict_line(v.compare_arm(nothing, curves, "critic_l2=0.01"))
    assert "5/5 with no common horizon, 5 censored (" in line and "return at" not in line


def comparison(rate: s.RateDifference, ret: s.Difference | None) -> v.ArmComparison:
    return v.ArmComparison("tau=1.0", rate, ret, 16000.0, 16000.0, 0)


def test_verdict_phrases() -> None:
    none = [False] * 5
    same_rate = s.rate_difference([True, False, False, False, False], [True, True, False, False, False])
    flat = s.mean_difference([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 3.0, 5.0, 4.0])
    line = v.verdict_line(comparison(same_rate, flat))
    assert line == (
        "tau=1.0: exploded 1/5 vs 2/5 by 16,000 steps (paired on 5 seeds, difference -0.20 [-0.59, 0.29]); return at 16,000 steps +0.0 [-1.2, 1.2]: "
        "no detectable effect on runaways, no detectable effect on return"
    )
    worse = s.mean_difference([-60.0, -40.0, -50.0, -45.0, -55.0], [0.0] * 5)
    assert v.verdict(comparison(s.rate_difference(none, none), worse)) == "no detectable effect on runaways, worse return"
    better = s.mean_difference([60.0, 40.0, 50.0], [0.0] * 3)
    assert v.verdict(comparison(s.rate_difference(none[:3], none[:3]), better)).endswith(", better return")
    fewer = s.rate_difference([True] + [False] * 9, [True] * 10)
    assert v.verdict(comparison(fewer, None)) == "fewer runaways"
    more = s.rate_difference([True] * 10, [False] * 10)
    assert v.verdict(comparison(more, None)) == "more runaways"
    unpaired = s.mean_difference(pd.Series([5.0, 6.0, 7.0]), pd.Series([1.0, 2.0, 3.0], index=[4, 5, 6]))
    line = v.verdict_line(comparison(s.rate_difference(pd.Series(none[:3]), pd.Series(none[:3], index=[4, 5, 6])), unpaired))
    assert "(unpaired difference +0.00" in line and line.endswith("(unpaired): no detectable effect on runaways, better return")
    two = s.mean_difference([1.0, 2.0], [0.0, 0.0])
    assert v.verdict(comparison(s.rate_difference(none[:2], [True, True]), two)) == (
        "too few seeds to judge runaways, too few seeds to judge return"
    )


# --- coverage ---------------------------------------------------------------------------------

STUDIES, SEEDS = 2000, 5


def bounds(d: s.Difference) -> tuple[float, float]:
    return d.low, d.high


def mixture(rng: np.random.Generator, n: int) -> tuple[np.ndarray]:
    """RL returns: half the seeds learn (about -200), half fail (about -900)."""
    learn = rng.random(n) < 0.5
    return (np.where(learn, rng.normal(-200, 30, n), rng.normal(-900, 100, n)),)


def seed_pairs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A seed effect both arms share, the arm 20 better, skewed noise on the arm."""
    seed_effect = rng.normal(0, 300, n)
    arm = seed_effect + 20 + rng.normal(0, 30, n) + 30 * (rng.lognormal(0, 0.5, n) - math.exp(0.125))
    return arm, seed_effect + rng.normal(0, 30, n)


def binary_pairs(p_arm: float, p_base: float, rho: float):  # noqa: ANN201
    p11 = p_arm * p_base + rho * math.sqrt(p_arm * (1 - p_arm) * p_base * (1 - p_base))
    cells = [p11, p_arm - p11, p_base - p11, 1 - p_arm - p_base + p11]

    def draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        kind = rng.choice(4, size=n, p=cells)
        return kind <= 1, (kind == 0) | (kind == 2)

    return draw


@pytest.mark.parametrize(
    ("name", "draw", "interval", "truth"),
    [
        ("normal mean", lambda g, n: (g.normal(0, 1, n),), s.t_interval, 0.0),
        ("lognormal mean", lambda g, n: (g.lognormal(0, 0.5, n),), s.t_interval, math.exp(0.125)),
        ("learn-or-fail mixture mean", mixture, s.t_interval, -550.0),
        ("paired return difference", seed_pairs, lambda a, b: bounds(s.mean_difference(a, b)), 20.0),
        ("paired rate 0.2 vs 0.8", binary_pairs(0.2, 0.8, 0.0), lambda a, b: bounds(s.rate_difference(a, b)), -0.6),
        ("paired rate 0.3 vs 0.6", binary_pairs(0.3, 0.6, 0.3), lambda a, b: bounds(s.rate_difference(a, b)), -0.3),
        ("Welch, sd 30 vs 90", lambda g, n: (g.normal(10, 30, n), g.normal(0, 90, n)), s.welch_interval, 10.0),
    ],
)
def test_95_percent_intervals_cover_at_least_90_percent_at_five_seeds(name, draw, interval, truth) -> None:  # noqa: ANN001
    hit = s.coverage(draw, interval, truth, SEEDS, STUDIES, np.random.default_rng(11))
    assert hit >= 0.90, f"{name}: {hit:.3f}"


@pytest.mark.parametrize(
    ("name", "draw", "interval"),
    [
        ("normal mean", lambda g, n: (g.normal(0, 1, n),), s.t_interval),
        ("paired return difference", seed_pairs, lambda a, b: bounds(s.mean_difference(a, b))),
        ("Welch, sd 30 vs 90", lambda g, n: (g.normal(10, 30, n), g.normal(0, 90, n)), s.welch_interval),
    ],
)
def test_95_percent_intervals_are_not_wider_than_95_percent_needs(name, draw, interval) -> None:  # noqa: ANN001
    """Coverage alone passes an interval of everything: on data they are exact (or near) for, the
    intervals cover no more than 97.5% of the time."""
    truth = {"normal mean": 0.0, "paired return difference": 20.0, "Welch, sd 30 vs 90": 10.0}[name]
    hit = s.coverage(draw, interval, truth, SEEDS, STUDIES, np.random.default_rng(12))
    assert hit <= 0.975, f"{name}: {hit:.3f}"
