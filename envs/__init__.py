"""One factory for every environment a trial can run on.

``make("drive", settings)`` builds the embedded driving simulator, ``make("carla", settings)``
the CARLA client env, and any other name goes to ``gymnasium.make``. Settings are validated by
the env's own pydantic config, so a typo fails here, before any training starts.

``import envs`` registers ``Drive-v0`` with gymnasium, as ``import highway_env`` registers its envs,
so ``gymnasium.make("Drive-v0")`` works after it. The registration names the entry point as text:
the simulator's modules load on the first ``make``, not on import.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import gymnasium as gym
from pydantic import BaseModel, ValidationError

from envs.validation import describe_errors

# Short names users type on the command line and in study files.
DRIVE = "drive"
CARLA = "carla"
DRIVE_ENV_ID = "Drive-v0"  # the embedded simulator's gymnasium id

if DRIVE_ENV_ID not in gym.registry:
    gym.register(id=DRIVE_ENV_ID, entry_point="envs.drive.env:DriveEnv")


class EnvSettingsError(ValueError):
    """An env name or setting that cannot be used; the message names it and what is allowed."""


SettingsModel = TypeVar("SettingsModel", bound=BaseModel)


def parse_settings(model: type[SettingsModel], settings: dict[str, Any], env_label: str) -> SettingsModel:
    """An env's pydantic settings from keyword settings, or one EnvSettingsError naming every bad
    key and what is allowed: the error every env reports its settings with."""
    try:
        return model(**settings)
    except ValidationError as error:
        raise EnvSettingsError(f"{env_label}: " + "; ".join(describe_errors(error, model))) from None


def needs_server(name: str) -> bool:
    """Whether the env's world lives in a simulator server that a trial holds one of (CARLA).

    Such an env cannot be built twice per trial, so evaluation runs on the training env, and its
    episodes cannot be replayed from their actions (the server's world is not restored by a reset
    from a seed), so a resumed trial starts a new episode.
    """
    return name == CARLA


def make(name: str, settings: dict[str, Any] | None = None, render_mode: str | None = None) -> gym.Env:
    """Build an env by short name (``drive``, ``carla``) or gymnasium id, with its settings."""
    settings = dict(settings or {})
    if name in (DRIVE, DRIVE_ENV_ID):
        return _gym_make(DRIVE_ENV_ID, settings, render_mode)
    if name == CARLA:
        try:
            from envs.carla.env import CarlaEnv
        except ImportError as err:  # the carla wheel is an optional extra
            raise EnvSettingsError(
                f"env 'carla' needs the CARLA client: pip install -e '.[carla]' ({err})"
            ) from err
        return CarlaEnv(**settings)
    return _gym_make(name, settings, render_mode)


def _gym_make(env_id: str, settings: dict[str, Any], render_mode: str | None) -> gym.Env:
    if env_id not in gym.registry:
        known = ", ".join(sorted([DRIVE, CARLA, "Pendulum-v1", "HalfCheetah-v5", "..."]))
        raise EnvSettingsError(f"unknown env {env_id!r}: use a gymnasium id or one of {known}")
    try:
        return gym.make(env_id, render_mode=render_mode, **settings)
    except TypeError as err:  # gymnasium passes unknown kwargs to the constructor
        raise EnvSettingsError(f"env {env_id!r} does not accept settings {sorted(settings)}: {err}") from err


def declared_reward_range(env: gym.Env) -> tuple[float, float] | None:
    """The per-step reward range the env declares, or None.

    Gymnasium 1.x dropped ``Env.reward_range``; the driving envs still declare one as an instance
    attribute. An infinite or missing range means "not declared": the Q guard then falls back to
    the rewards seen in the replay buffer.
    """
    declared = getattr(env.unwrapped, "reward_range", None)
    if declared is None:
        return None
    low, high = float(declared[0]), float(declared[1])
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        return None
    return low, high
