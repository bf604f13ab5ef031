"""``--set key=value`` routing and validation: bad input is refused with the key named."""

from __future__ import annotations

import pytest

from study.config import ConfigError, build_trial_config


def test_overrides_reach_agent_trial_guard_and_env() -> None:
    cfg = build_trial_config(
        {"env": "drive"},
        [
            "tau=0.01",
            "critic_l2=0.01",
            "reward_clip=null",
            "hidden_sizes=[64, 64]",
            "eval_every=1000",
            "report_every=500",
            "checkpoint_every=1000",
            "guard.patience=3",
            "drive.n_npcs=5",
            "env.observation=vector",
        ],
    )
    assert cfg.agent.tau == 0.01 and cfg.agent.critic_l2 == 0.01 and cfg.agent.reward_clip is None
    assert list(cfg.agent.hidden_sizes) == [64, 64]
    assert cfg.eval_every == 1000 and cfg.guard.patience == 3
    assert cfg.env_settings == {"n_npcs": 5, "observation": "vector"}


def test_unknown_key_is_named_with_what_is_allowed() -> None:
    with pytest.raises(ConfigError) as err:
        build_trial_config({}, ["tua=0.01"])
    message = str(err.value)
    assert "tua" in message and "unknown key" in message and "tau" in message


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("tau=2", "tau"),
        ("tau=0", "tau"),
        ("critic_l2=-0.1", "critic_l2"),
        ("critic_weight_decay=-1", "critic_weight_decay"),
        ("weight_decay_mode=sideways", "weight_decay_mode"),
        ("reward_clip=-1", "reward_clip"),
        ("guard.tolerance=0", "guard.tolerance"),
        ("eval_every=700", "eval_every"),
    ],
)
def test_bad_value_is_refused_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_trial_config({}, [override])
    assert str(err.value).startswith(key) or f"\n{key}" in str(err.value)


def test_all_bad_keys_are_reported_together() -> None:
    with pytest.raises(ConfigError) as err:
        build_trial_config({}, ["tau=2", "gamma=1.5"])
    assert "tau" in str(err.value) and "gamma" in str(err.value)


def test_env_scope_must_match_the_env() -> None:
    with pytest.raises(ConfigError, match="carla.port"):
        build_trial_config({"env": "drive"}, ["carla.port=2000"])


def test_malformed_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        build_trial_config({}, ["tau"])


def test_unknown_keys_and_bad_values_come_in_one_message() -> None:
    with pytest.raises(ConfigError) as err:
        build_trial_config({}, ["tau=3", "gama=0.9"])
    lines = str(err.value).splitlines()
    assert any(line.startswith("gama") for line in lines) and any(line.startswith("tau") for line in lines)
