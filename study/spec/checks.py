"""Checks of a study file that a field's type cannot make alone, each returning problem lines.

They validate what the trials will be built from (TD3 settings of factors, arms and search
edges; whole trial configs; env settings, by building the env once; the CARLA pool's config), so
that nothing invalid reaches Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agents import TD3Config
from study.config import TrialConfig
from study.plan import arm_name, format_value, make_plan
from envs.validation import Location, describe_errors, path_key

if TYPE_CHECKING:
    from study.spec.schema import StudySpec


def agent_problems(base: TD3Config, overrides: dict[str, Any]) -> list[str]:
    """What is wrong with ``base`` changed by ``overrides`` (TD3Config's own messages)."""
    unknown = sorted(set(overrides) - set(TD3Config.model_fields))
    if unknown:
        return [f"unknown TD3 field(s) {unknown}; allowed: {', '.join(TD3Config.model_fields)}"]
    try:
        TD3Config.model_validate({**base.model_dump(), **overrides})
    except ValidationError as err:

        def setting(loc: Location) -> str:  # the setting as the study file wrote it
            field = path_key(loc)
            return f"{field}={format_value(overrides[field])}" if field in overrides else f"with {arm_name(overrides)}"

        return describe_errors(err, TD3Config, key=setting)
    return []


def trial_problems(spec: StudySpec, overrides: dict[str, Any], regime: str | None = None) -> list[str]:
    """Cross-checks only a whole trial sees (e.g. the agent's batch size against the budget, or an
    arm's settings on top of a regime's)."""
    try:
        make_plan(spec, arm_name(overrides), overrides, spec.seeds[0], regime)
    except ValidationError as err:
        return describe_errors(err, TrialConfig)
    return []


def check_env_settings(env: str, settings: dict[str, Any]) -> None:
    """Build the env once with these settings (CARLA: validate its config without connecting)."""
    import envs

    try:
        if env == envs.CARLA:
            try:
                from envs.carla.config import CarlaConfig
            except ImportError as err:
                raise ValueError(f"env 'carla' needs the CARLA client: pip install -e '.[carla]' ({err})") from None
            envs.parse_settings(CarlaConfig, settings, "carla")
        else:
            envs.make(env, settings).close()
    except envs.EnvSettingsError as err:
        raise ValueError(str(err)) from None


def carla_pool_problems(settings: dict[str, Any]) -> list[str]:
    try:
        from envs.carla.pool_config import CarlaPoolConfig
    except ImportError as err:
        return [f"carla_pool: the CARLA pool is not available ({err})"]
    try:
        CarlaPoolConfig.model_validate(settings)
    except ValidationError as err:
        return describe_errors(err, CarlaPoolConfig, key=lambda loc: path_key(("carla_pool", *loc)))
    return []
