"""TD3Config: the TD3 paper's defaults, and one clear error per bad value naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agents import TD3Config


def test_defaults_are_the_td3_papers() -> None:
    cfg = TD3Config()
    assert (cfg.lr_actor, cfg.lr_critic, cfg.hidden_sizes, cfg.tau, cfg.gamma) == (3e-4, 3e-4, (256, 256), 0.005, 0.99)
    assert (cfg.policy_noise, cfg.noise_clip, cfg.policy_delay, cfg.exploration_noise) == (0.2, 0.5, 2, 0.1)
    assert (cfg.batch_size, cfg.clipped_double_q, cfg.target_policy_smoothing) == (256, True, True)
    assert (cfg.critic_l2, cfg.critic_weight_decay, cfg.grad_clip_norm, cfg.reward_clip) == (0.0, 0.0, None, None)


def test_study_file_values_are_coerced() -> None:
    cfg = TD3Config.model_validate({"hidden_sizes": [64, 64, 64], "reward_clip": None, "tau": "0.01"})
    assert cfg.hidden_sizes == (64, 64, 64) and cfg.tau == 0.01


@pytest.mark.parametrize(
    ("values", "field", "allowed"),
    [
        ({"tau": 0.0}, "tau", "greater than 0"),
        ({"tau": 1.5}, "tau", "less than or equal to 1"),
        ({"gamma": 1.0}, "gamma", "less than 1"),
        ({"gamma": -0.1}, "gamma", "greater than or equal to 0"),
        ({"lr_actor": 0.0}, "lr_actor", "greater than 0"),
        ({"lr_critic": -1e-3}, "lr_critic", "greater than 0"),
        ({"critic_l2": -0.01}, "critic_l2", "greater than or equal to 0"),
        ({"critic_weight_decay": -0.01}, "critic_weight_decay", "greater than or equal to 0"),
        ({"exploration_noise": -0.1}, "exploration_noise", "greater than or equal to 0"),
        ({"policy_noise": -0.1}, "policy_noise", "greater than or equal to 0"),
        ({"noise_clip": -0.5}, "noise_clip", "greater than or equal to 0"),
        ({"policy_delay": 0}, "policy_delay", "greater than 0"),
        ({"batch_size": 0}, "batch_size", "greater than 0"),
        ({"learning_starts": -1}, "learning_starts", "greater than or equal to 0"),
        ({"hidden_sizes": []}, "hidden_sizes", "at least 1"),
        ({"hidden_sizes": [256, 0]}, "hidden_sizes", "greater than 0"),
        ({"grad_clip_norm": 0.0}, "grad_clip_norm", "greater than 0"),
        ({"reward_clip": -1.0}, "reward_clip", "greater than 0"),
        ({"weight_decay_mode": "adamw"}, "weight_decay_mode", "'coupled' or 'decoupled'"),
        ({"clipped_double_q": "maybe"}, "clipped_double_q", "valid boolean"),
        ({"taux": 0.01}, "taux", "Extra inputs are not permitted"),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(values: dict[str, object], field: str, allowed: str) -> None:
    with pytest.raises(ValidationError) as err:
        TD3Config.model_validate(values)
    (problem,) = err.value.errors()
    assert problem["loc"][0] == field
    assert allowed in problem["msg"]


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"batch_size": 512, "buffer_size": 100}, "buffer_size", "batch_size (512) must be <= buffer_size (100)"),
        (
            {"grad_norm_warning": 10.0, "grad_norm_critical": 5.0},
            "grad_norm_critical",
            "grad_norm_critical (5.0) must be > grad_norm_warning (10.0)",
        ),
    ],
)
def test_inconsistent_fields_name_the_field_and_its_bound(values: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        TD3Config.model_validate(values)
    (problem,) = err.value.errors()
    assert problem["loc"] == (field,)
    assert message in problem["msg"]


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError, match="frozen"):
        TD3Config().tau = 0.01  # type: ignore[misc]
