"""The actor-path Q guard's rule, on hand-made values and on the real CARLA run's timeline."""

from __future__ import annotations

import math

import pytest

from study.guard import (
    GuardConfig,
    GuardState,
    actor_q_excess,
    clip_reward_range,
    guard_reward_range,
    guard_step,
    q_interval,
    return_interval,
    verdict,
)

# debug/actor_q_mean of the CARLA run that diverged (DESIGN.md), by env step.
CARLA_ACTOR_Q = [
    (1100, 2.19),
    (1200, 8.94),
    (1300, 21.4),
    (1400, 40.8),
    (1500, 71.0),
    (2500, 1_000.0),
    (3700, 1.52e6),
    (4800, 1.94e6),
    (5000, 2.33e6),
]
CARLA_REWARDS = (-50.0, 200.0)


def test_return_interval_for_mixed_sign_rewards_is_horizon_scaled() -> None:
    assert return_interval(*CARLA_REWARDS, gamma=0.99) == pytest.approx((-5_000.0, 20_000.0))


def test_return_interval_for_one_signed_rewards_keeps_the_near_end_at_one_reward() -> None:
    # All rewards <= 0 (Pendulum): no return can exceed the best single reward.
    assert return_interval(-16.27, -0.5, gamma=0.99) == pytest.approx((-1_627.0, -0.5))
    # All rewards > 0: no return can fall below the worst single reward.
    assert return_interval(1.0, 2.0, gamma=0.9) == pytest.approx((1.0, 20.0))


def test_return_interval_rejects_inverted_range_and_bad_gamma() -> None:
    with pytest.raises(ValueError, match="r_min <= r_max"):
        return_interval(1.0, -1.0, 0.99)
    with pytest.raises(ValueError, match="gamma"):
        return_interval(-1.0, 1.0, 1.0)


def test_reward_clipping_tightens_the_range() -> None:
    assert clip_reward_range(-50.0, 200.0, 10.0) == (-10.0, 10.0)
    assert clip_reward_range(-5.0, 3.0, 10.0) == (-5.0, 3.0)
    assert clip_reward_range(-50.0, 200.0, None) == (-50.0, 200.0)
    assert clip_reward_range(20.0, 30.0, 10.0) == (10.0, 10.0)


def test_q_interval_intersects_the_declared_range_with_the_rewards_seen() -> None:
    # The CARLA run's rewards: declared [-50, 200], seen [0.77, 156.7]. The seen range is the
    # tighter bound: its interval is [0.77, 15,670] instead of [-5,000, 20,000].
    assert q_interval(CARLA_REWARDS, (0.77, 156.7), 0.99, None) == pytest.approx((0.77, 15_670.0))
    assert q_interval(None, (0.77, 156.7), 0.99, None) == pytest.approx((0.77, 15_670.0))
    assert q_interval(CARLA_REWARDS, (-3.0, 156.7), 0.99, 1.0) == pytest.approx((-100.0, 100.0))
    assert q_interval(CARLA_REWARDS, None, 0.99, None) is None  # no reward seen: nothing to judge


def test_a_seen_reward_outside_the_declared_range_voids_the_declaration() -> None:
    # A reward of -60 proves [-50, 200] wrong; the buffer's own range still bounds its backups.
    assert guard_reward_range(CARLA_REWARDS, (-60.0, 100.0)) == (-60.0, 100.0)


def test_a_degenerate_reward_history_is_widened_to_one_reward_unit() -> None:
    # Sparse rewards, all zero so far: one reward unit wide, the interval is 1 / (1 - gamma) wide.
    assert guard_reward_range(None, (0.0, 0.0)) == (-0.5, 0.5)
    assert q_interval(None, (0.0, 0.0), 0.99, None) == pytest.approx((-50.0, 50.0))
    # ... within a declared range the rewards keep: a goal reward in [0, 1] cannot be negative.
    assert guard_reward_range((0.0, 1.0), (0.0, 0.0)) == (0.0, 0.5)
    # Ranges already a unit wide are left alone.
    assert guard_reward_range(None, (-16.27, -0.01)) == (-16.27, -0.01)


def test_critic_noise_on_all_zero_rewards_is_no_strike_but_a_runaway_is() -> None:
    interval = q_interval(None, (0.0, 0.0), 0.99, None)
    assert interval is not None
    cfg = GuardConfig()
    # Measured (bench/guard_interval.py): TD3 on Pendulum-v1 with every reward 0 reached |Q| 0.72.
    assert actor_q_excess(0.72, -0.72, interval) <= cfg.tolerance
    assert actor_q_excess(0.72, -0.72, (0.0, 0.0)) > cfg.tolerance  # the old absolute floor: a false stop
    assert actor_q_excess(65.0, 0.0, interval) > cfg.tolerance  # 6.5 rewards' worth above any return


def test_excess_is_zero_inside_and_a_share_of_the_width_outside() -> None:
    interval = (-5_000.0, 20_000.0)
    assert actor_q_excess(19_000.0, -4_000.0, interval) == 0.0
    assert actor_q_excess(22_500.0, 0.0, interval) == pytest.approx(0.1)
    assert actor_q_excess(0.0, -10_000.0, interval) == pytest.approx(0.2)
    assert actor_q_excess(math.nan, 0.0, interval) == math.inf
    assert actor_q_excess(math.inf, 0.0, interval) == math.inf


def test_a_zero_width_interval_measures_against_one_reward_unit() -> None:
    assert actor_q_excess(0.05, 0.0, (0.0, 0.0)) == pytest.approx(0.05)


def _run(timeline: list[tuple[int, float]], interval: tuple[float, float], cfg: GuardConfig) -> tuple[int, str] | None:
    state = GuardState()
    for step, q in timeline:
        state, reason = guard_step(state, actor_q_excess(q, q, interval), cfg)
        if reason:
            return step, reason
    return None


def test_guard_stops_the_carla_runaway_between_2500_and_3700_steps() -> None:
    interval = q_interval(CARLA_REWARDS, (0.77, 156.7), 0.99, None)
    assert interval is not None
    assert _run(CARLA_ACTOR_Q, interval, GuardConfig(patience=1)) == (3_700, "q_explosion")
    # With the default patience 2 it needs one more report on this sparse timeline.
    assert _run(CARLA_ACTOR_Q, interval, GuardConfig()) == (4_800, "q_explosion")


def test_guard_spares_pendulum_noise_at_the_interval_edge() -> None:
    interval = q_interval(None, (-16.27, 0.0), 0.99, None)
    assert interval is not None
    healthy = [(step, q) for step, q in zip(range(500, 15_001, 500), [7.0, -3.0, 1.0] * 10)]
    assert _run(healthy, interval, GuardConfig()) is None


def test_guard_checks_the_lower_end_too() -> None:
    interval = (-1_627.0, 0.0)
    falling = [(500, -1_000.0), (1_000, -50_000.0), (1_500, -4e6)]
    assert _run(falling, interval, GuardConfig()) == (1_500, "q_explosion")


def test_one_report_back_inside_clears_the_strikes() -> None:
    cfg = GuardConfig(patience=2)
    state, _ = guard_step(GuardState(), 5.0, cfg)
    state, _ = guard_step(state, 0.0, cfg)
    state, reason = guard_step(state, 5.0, cfg)
    assert reason is None and state.strikes == 1


def test_nothing_to_judge_neither_strikes_nor_clears() -> None:
    cfg = GuardConfig(patience=2)
    state, _ = guard_step(GuardState(), 5.0, cfg)
    state, reason = guard_step(state, math.nan, cfg)
    assert reason is None and state.strikes == 1
    _, reason = guard_step(state, 5.0, cfg)
    assert reason == "q_explosion"


def test_non_finite_actor_q_is_its_own_reason() -> None:
    cfg = GuardConfig(patience=2)
    state, _ = guard_step(GuardState(), math.inf, cfg)
    _, reason = guard_step(state, math.inf, cfg)
    assert reason == "non_finite"


def test_disabled_guard_counts_but_never_stops() -> None:
    cfg = GuardConfig(enabled=False, patience=1)
    state, reason = guard_step(GuardState(), 100.0, cfg)
    assert reason is None and state.strikes == 1 and state.last_reason == "q_explosion"


def test_guard_config_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        GuardConfig(tolerance=0.0)
    with pytest.raises(ValueError, match="patience"):
        GuardConfig(patience=0)


def test_verdict_applies_patience_to_the_trials_own_strike_count() -> None:
    cfg = GuardConfig(patience=2)
    assert verdict(1, 5.0, cfg) is None
    assert verdict(2, 5.0, cfg) == "q_explosion"
    assert verdict(2, math.inf, cfg) == "non_finite"
    assert verdict(2, math.nan, cfg) is None  # nothing to judge never stops
    assert verdict(9, 5.0, GuardConfig(enabled=False)) is None
