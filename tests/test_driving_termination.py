"""Termination reasons of envs.driving and the stuck counter."""

import pytest
from pydantic import ValidationError

from envs.driving.termination import (
    TERMINATION_REASONS,
    TIME_LIMIT,
    TerminationConfig,
    episode_end,
    next_stuck_steps,
    termination_reason,
)

CFG = TerminationConfig(stuck_speed=0.5, stuck_steps=3)


@pytest.mark.parametrize(
    ("collided", "off_road", "route_done", "stuck_steps", "expected"),
    [
        (False, False, False, 0, None),
        (True, False, False, 0, "collision"),
        (False, True, False, 0, "off_road"),
        (False, False, True, 0, "route_completed"),
        (False, False, False, 3, "stuck"),
        (False, False, False, 2, None),
        (True, True, True, 9, "collision"),  # the most serious reason wins
        (False, True, True, 9, "off_road"),
        (False, False, True, 9, "route_completed"),
    ],
)
def test_reasons_and_their_priority(collided, off_road, route_done, stuck_steps, expected):
    reason = termination_reason(collided, off_road, route_done, stuck_steps, CFG)
    assert reason == expected
    assert reason is None or reason in TERMINATION_REASONS


def test_stuck_counter_counts_consecutive_slow_steps_and_resets_when_moving():
    count = 0
    for speed, expected in [(0.1, 1), (0.0, 2), (0.49, 3), (0.5, 0), (0.2, 1)]:
        count = next_stuck_steps(count, speed, CFG)
        assert count == expected


def test_config_validation_names_the_field():
    with pytest.raises(ValidationError, match="stuck_steps"):
        TerminationConfig(stuck_steps=0)
    with pytest.raises(ValidationError, match="stuck_time"):
        TerminationConfig(stuck_time=3)


def test_episode_end_keeps_a_crash_at_the_time_limit_a_termination():
    assert episode_end("collision", 1000, 1000) == (True, False, {"termination_reason": "collision"})
    assert episode_end(None, 1000, 1000) == (False, True, {"truncation_reason": TIME_LIMIT})
    assert episode_end(None, 999, 1000) == (False, False, {})
