"""One trial's configuration, and the ``--set key=value`` overrides users apply to it.

Keys are flat where users think of them flat: TD3 fields by their own names (``tau=0.01``,
``critic_l2=0.01``), trial settings by theirs (``eval_every=2000``), the guard under ``guard.``
and the env's settings under the env's name (``drive.n_npcs=5``, ``carla.port=2000``).
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agents import TD3Config
from study.guard import GuardConfig
from envs.validation import Location, describe_errors, path_key


class ConfigError(ValueError):
    """A configuration that cannot run; the message names every bad key and what is allowed."""


class TrialConfig(BaseModel):
    """Everything that defines one trial: env, agent, budget, cadences, guard."""

    model_config = ConfigDict(extra="forbid")

    env: str = Field("Pendulum-v1", description="gymnasium id, 'drive' or 'carla'")
    env_settings: dict[str, Any] = Field(default_factory=dict)
    agent: TD3Config = Field(default_factory=TD3Config)
    steps: int = Field(15_000, gt=0, description="env steps (one update per step after learning_starts)")
    seed: int = Field(0, ge=0)
    eval_every: int = Field(5_000, gt=0, description="env steps between evaluations")
    eval_episodes: int = Field(10, gt=0)
    report_every: int = Field(500, gt=0, description="env steps between metric reports and guard checks")
    checkpoint_every: int = Field(5_000, gt=0, description="env steps between checkpoints")
    checkpoint_buffer: bool = Field(True, description="store the replay buffer in checkpoints (exact resume)")
    guard: GuardConfig = Field(default_factory=GuardConfig)
    device: str = Field("auto", description="'auto' (cuda when present), 'cpu', 'cuda' or 'cuda:N'")
    torch_threads: int = Field(1, ge=1, description="a study runs one trial per core")

    @model_validator(mode="after")
    def _cadences_fit(self) -> TrialConfig:
        if self.eval_every % self.report_every or self.checkpoint_every % self.report_every:
            raise ValueError(
                f"eval_every ({self.eval_every}) and checkpoint_every ({self.checkpoint_every}) "
                f"must be multiples of report_every ({self.report_every})"
            )
        return self



# Trial fields a user may set directly; the nested ones are reached through their own keys.
_NESTED = {"agent", "guard", "env_settings"}
_TRIAL_KEYS = sorted(set(TrialConfig.model_fields) - _NESTED)
_AGENT_KEYS = sorted(TD3Config.model_fields)
_GUARD_KEYS = sorted(f"guard.{name}" for name in GuardConfig.model_fields)
_ENV_SCOPES = ("env", "drive", "carla")


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (``null``, ``0.01``, ``[256, 256]``, ``true``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set tau=0.01")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: cannot read value {raw!r} ({err.__class__.__name__})") from err
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Route each ``key=value`` to where it belongs in a copy of a trial-config dict.

    Returns the merged dict and one problem line per key that cannot be placed, so that unknown
    keys are reported together with bad values rather than one per attempt.
    """
    data = {**data}
    agent = dict(data.get("agent") or {})
    guard = dict(data.get("guard") or {})
    env_settings = dict(data.get("env_settings") or {})
    env_name = str(data.get("env", TrialConfig.model_fields["env"].default))
    env_scopes = ("env", env_name) if env_name in _ENV_SCOPES else ("env",)
    problems = []
    for text in overrides:
        key, value = parse_override(text)
        scope, _, rest = key.partition(".")
        if key in TD3Config.model_fields or (scope == "agent" and rest in TD3Config.model_fields):
            agent[rest or key] = value
        elif key in _TRIAL_KEYS:
            data[key] = value
        elif scope == "guard" and rest in GuardConfig.model_fields:
            guard[rest] = value
        elif scope in env_scopes and rest:
            env_settings[rest] = value
        elif scope in _ENV_SCOPES and rest:
            problems.append(f"{key}: '{scope}.' settings apply to --env {scope}, not {env_name!r}")
        else:
            problems.append(
                f"{key}: unknown key. Allowed: TD3 fields {', '.join(_AGENT_KEYS)}; "
                f"trial fields {', '.join(_TRIAL_KEYS)}; {', '.join(_GUARD_KEYS)}; "
                f"env settings as {' or '.join(scope + '.NAME' for scope in env_scopes)}"
            )
    data.update(agent=agent, guard=guard, env_settings=env_settings)
    return data, problems


def override_key(loc: Location) -> str:
    """The ``--set`` key for a pydantic error location: TD3 fields are flat (``tau``), the rest dotted."""
    return path_key(loc[1:] if loc[:1] == ("agent",) else loc)


def build_trial_config(data: dict[str, Any], overrides: list[str] | None = None) -> TrialConfig:
    """Validate a trial config (after overrides); raise ConfigError naming every bad key."""
    merged, problems = apply_overrides(data, overrides or [])
    try:
        cfg = TrialConfig.model_validate(merged)
    except ValidationError as err:
        problems += describe_errors(err, TrialConfig, key=override_key)
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg
