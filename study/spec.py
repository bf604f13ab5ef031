"""Study files (``search_spaces/*.yaml``): schema, validation, and expansion into trials.

A study file says what to compare (the env, the base TD3 config, the design and its factors),
how hard (seeds, budget, cadences), how to decide early (ASHA, the actor-path Q guard) and where
it runs (per-trial resources, CARLA pool). Everything is checked here, before Ray starts: one
``SpecError`` names every bad key with what is allowed, so a typo costs seconds, not a cluster.

Designs:

- ``factorial``: every combination of the listed factor levels, plus any extra ``arms``.
- ``one_at_a_time``: the baseline (the base ``agent`` config) plus each factor's other levels
  alone, plus any extra ``arms`` (settings that only make sense together, e.g. weight decay with
  its mode, or a known-bad configuration kept as a control).
- ``optuna``: ``distributions`` searched by Optuna through Ray Tune, ``num_samples``
  configurations, each run with every seed.

An arm is named by what it changes from the base config: ``baseline``, ``tau=1.0`` or
``critic_weight_decay=0.01,weight_decay_mode=decoupled``. That name is the arm's key in Tune
results, MLflow tags and the analysis tables.
"""

from __future__ import annotations

import itertools
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from agents import TD3Config
from study.config import TrialConfig
from study.guard import GuardConfig

SEARCH_SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
BASELINE = "baseline"
TRIAL_INDEX = "__trial_index__"  # ray.tune.search.repeater.TRIAL_INDEX, without importing Ray here
Design = Literal["factorial", "one_at_a_time", "optuna"]


class SpecError(ValueError):
    """A study file that cannot run; the message lists every bad key and what is allowed."""


# --------------------------------------------------------------------------------------------
# Sections of a study file
# --------------------------------------------------------------------------------------------


class Budget(BaseModel):
    """Per-trial budget and cadences, in env steps (the fields of ``study.config.TrialConfig``)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(gt=0)
    eval_every: int = Field(gt=0)
    eval_episodes: int = Field(5, gt=0)
    report_every: int = Field(500, gt=0)
    checkpoint_every: int = Field(gt=0)
    checkpoint_buffer: bool = Field(True, description="exact resume needs the replay buffer")

    @model_validator(mode="after")
    def _trial_accepts(self) -> Budget:
        # TrialConfig owns the cadence rules; asking it keeps one source of truth.
        try:
            TrialConfig.model_validate(self.model_dump())
        except ValidationError as err:
            raise ValueError("; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())) from None
        return self


class SchedulerConfig(BaseModel):
    """ASHA on ``eval/return_mean`` over ``env_steps``; the Q guard runs whatever this says."""

    model_config = ConfigDict(extra="forbid")

    asha: bool = Field(True, description="prune on return; false leaves only the Q guard")
    grace_period: int = Field(gt=0, description="env steps before ASHA may prune (>= eval_every)")
    reduction_factor: float = Field(3.0, gt=1.0, description="ASHA keeps the top 1/reduction_factor per rung")


class Resources(BaseModel):
    """What one trial asks Ray for. ``carla`` is the custom resource cluster.yaml's GPU nodes advertise."""

    model_config = ConfigDict(extra="forbid")

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0, description="a fraction shares one GPU between trials")
    carla: int = Field(0, ge=0, le=1, description="1 for env 'carla': one CARLA server slot")


class Distribution(BaseModel):
    """One Optuna search dimension."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = Field(None, description="for type 'choice'")

    @model_validator(mode="after")
    def _complete(self) -> Distribution:
        if self.type == "choice":
            if not self.values or self.low is not None or self.high is not None:
                raise ValueError("type 'choice' takes a non-empty 'values' list and no low/high")
            return self
        if self.low is None or self.high is None or self.values is not None:
            raise ValueError(f"type {self.type!r} takes 'low' and 'high' and no 'values'")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0 (got {self.low})")
        if self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError("type 'int' needs integer low and high")
        return self

    def edge_values(self) -> list[Any]:
        """Values that bound what the search can propose: checked against TD3Config up front."""
        if self.type == "choice":
            return list(self.values or [])
        if self.type == "int":
            return [int(self.low or 0), int(self.high or 0)]
        return [self.low, self.high]


class Arm(BaseModel):
    """An extra arm: TD3 settings that only make sense together, optionally with a short name."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$", description="default: its settings, k=v,...")
    set: dict[str, Any] = Field(min_length=1, description="TD3 field -> value")

    @field_validator("name")
    @classmethod
    def _not_baseline(cls, name: str | None) -> str | None:
        if name == BASELINE:
            raise ValueError(f"{BASELINE!r} is the base config's arm; pick another name")
        return name


class FaultInjection(BaseModel):
    """For tests only: make each trial's first attempt raise once it reaches a step.

    A retried attempt (one that starts from a checkpoint) runs clean, so a test can check that
    Tune retries the trial from its checkpoint rather than from zero.
    """

    model_config = ConfigDict(extra="forbid")

    fail_at_step: int = Field(gt=0)


class StudySpec(BaseModel):
    """A whole study file. Field order matters: later validators read earlier fields."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="MLflow experiment and Tune folder")
    description: str = ""
    env: str = Field(description="'drive', 'carla' or a gymnasium id")
    env_settings: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    agent: TD3Config = Field(default_factory=TD3Config, description="the base (baseline) TD3 config")
    design: Design
    factors: dict[str, list[Any]] = Field(default_factory=dict, description="TD3 field -> levels")
    arms: list[Arm] = Field(default_factory=list, description="extra arms beyond the factors'")
    distributions: dict[str, Distribution] = Field(default_factory=dict, description="optuna only")
    num_samples: int | None = Field(None, gt=0, description="optuna only: configurations to try")
    seeds: list[int] = Field(min_length=1)
    budget: Budget
    guard: GuardConfig = GuardConfig()
    scheduler: SchedulerConfig
    resources: Resources = Resources()
    carla_pool: dict[str, Any] | None = Field(None, description="envs.carla.pool.CarlaPoolConfig, env 'carla' only")
    max_failures: int = Field(2, ge=0, description="retries of a crashed trial, from its last checkpoint")
    max_concurrent_trials: int | None = Field(None, gt=0)
    device: str = Field("auto", description="torch device per trial")
    storage: str = Field("./results", description="Tune folder root (shared storage on a cluster)")
    tracking_uri: str | None = Field(None, description="MLflow; default sqlite:///<storage>/mlflow.db")
    fault_injection: FaultInjection | None = Field(None, description="testing only")
    smoke: dict[str, Any] = Field(default_factory=dict, description="overrides applied by --smoke")

    @field_validator("env_settings")
    @classmethod
    def _env_accepts(cls, settings: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        env = info.data.get("env")
        if env is not None:
            check_env_settings(env, settings)
        return settings

    @field_validator("factors")
    @classmethod
    def _factor_levels(cls, factors: dict[str, list[Any]], info: ValidationInfo) -> dict[str, list[Any]]:
        base = info.data.get("agent", TD3Config())
        problems = []
        for name, levels in factors.items():
            if not levels:
                problems.append(f"{name}: needs at least one level")
            if len(set(map(repr, levels))) != len(levels):
                problems.append(f"{name}: levels repeat ({levels})")
            problems += [p for level in levels for p in agent_problems(base, {name: level})]
        if problems:
            raise ValueError("; ".join(problems))
        return factors

    @field_validator("arms")
    @classmethod
    def _arm_settings(cls, arms: list[Arm], info: ValidationInfo) -> list[Arm]:
        base = info.data.get("agent", TD3Config())
        problems = [f"[{i}] {p}" for i, arm in enumerate(arms) for p in agent_problems(base, arm.set)]
        if problems:
            raise ValueError("; ".join(problems))
        return arms

    @field_validator("distributions")
    @classmethod
    def _distribution_edges(cls, dists: dict[str, Distribution], info: ValidationInfo) -> dict[str, Distribution]:
        base = info.data.get("agent", TD3Config())
        problems = [
            p for name, dist in dists.items() for value in dist.edge_values()
            for p in agent_problems(base, {name: value})
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return dists

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"seeds must be distinct integers >= 0 (got {seeds})")
        return seeds

    @field_validator("smoke")
    @classmethod
    def _smoke_keys(cls, smoke: dict[str, Any]) -> dict[str, Any]:
        allowed = sorted(set(cls.model_fields) - {"name", "smoke"})
        unknown = sorted(set(smoke) - set(allowed))
        if unknown:
            raise ValueError(f"unknown keys {unknown}; allowed: {', '.join(allowed)}")
        return smoke

    @model_validator(mode="after")
    def _design_complete(self) -> StudySpec:
        problems = []
        if self.design == "optuna":
            if not self.distributions or self.num_samples is None:
                problems.append("design 'optuna' needs 'distributions' and 'num_samples'")
            if self.factors or self.arms:
                problems.append("design 'optuna' takes 'distributions', not 'factors' or 'arms'")
        else:
            if not self.factors and not self.arms:
                problems.append(f"design {self.design!r} needs 'factors' (and/or 'arms')")
            if self.distributions or self.num_samples is not None:
                problems.append(f"'distributions' and 'num_samples' are for design 'optuna', not {self.design!r}")
            names = [arm for arm, _ in arms(self)]
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                problems.append(f"arms repeat: {repeated} (an extra arm equals a factor level or another arm)")
            problems += [f"arm {arm}: {p}" for arm, overrides in arms(self) for p in trial_problems(self, overrides)]
        sched, budget = self.scheduler, self.budget
        if not budget.eval_every <= sched.grace_period <= budget.steps:
            problems.append(
                f"scheduler.grace_period ({sched.grace_period}) must lie in [budget.eval_every "
                f"({budget.eval_every}), budget.steps ({budget.steps})]: ASHA ranks on evaluation return"
            )
        if (self.env == "carla") != (self.resources.carla == 1):
            problems.append("resources.carla must be 1 exactly when env is 'carla' (one server slot per trial)")
        if (self.env == "carla") != (self.carla_pool is not None):
            problems.append("carla_pool is required for env 'carla' and only for it")
        elif self.carla_pool is not None:
            problems += carla_pool_problems(self.carla_pool)
        if problems:
            raise ValueError("\n".join(problems))
        return self


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def resolve_space(name_or_path: str) -> Path:
    """``default`` -> search_spaces/default.yaml; anything with a suffix or a slash is a path."""
    path = Path(name_or_path)
    if path.suffix or len(path.parts) > 1:
        return path
    return SEARCH_SPACES / f"{name_or_path}.yaml"


def load_spec(name_or_path: str, *, smoke: bool = False) -> StudySpec:
    """Read and validate a study file; with ``smoke``, its ``smoke`` overrides applied first."""
    path = resolve_space(name_or_path)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SEARCH_SPACES.glob("*.yaml")))
        raise SpecError(f"--space {name_or_path}: no study file at {path}; shipped spaces: {known}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a study file is a mapping of keys (name, env, agent, design, ...)")
    return validate_spec(data, source=str(path), smoke=smoke)


def validate_spec(data: dict[str, Any], *, source: str = "study file", smoke: bool = False) -> StudySpec:
    """Validate a study mapping; raise ``SpecError`` listing every problem at once."""
    if smoke:
        data = apply_smoke(data)
    try:
        return StudySpec.model_validate(data)
    except ValidationError as err:
        lines = format_errors(err)
        mode = " (with --smoke)" if smoke else ""
        raise SpecError(f"{source}{mode}: {len(lines)} problem(s)\n" + "\n".join(f"  {line}" for line in lines)) from None


def apply_smoke(data: dict[str, Any]) -> dict[str, Any]:
    """The study with its ``smoke`` section merged in: mappings merge key by key, others replace."""
    overrides = data.get("smoke") or {}
    if not isinstance(overrides, dict):
        return data  # validation reports the malformed section
    return _deep_merge({k: v for k, v in data.items() if k != "smoke"}, overrides)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def format_errors(err: ValidationError) -> list[str]:
    """One line per problem: the key as written in the file, what is wrong, what is allowed."""
    lines = []
    for problem in err.errors():
        loc = problem["loc"]
        key = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[") or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            allowed = allowed_keys(StudySpec, loc[:-1])
            message = f"unknown key; allowed: {', '.join(allowed)}" if allowed else "unknown key"
        elif problem["type"] == "missing":
            message = "required key is missing"
        given = problem.get("input")
        shown = "" if problem["type"] in ("missing", "extra_forbidden") or isinstance(given, (dict, list)) else f" (got {given!r})"
        for i, part in enumerate(message.split("\n")):
            lines.append(f"{key}: {part}{shown if i == 0 else ''}")
    return lines


def allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys a mapping at ``loc`` inside ``model`` may hold (empty if not a model)."""
    annotation: Any = model
    for part in loc:
        annotation = _strip_optional(annotation)
        if isinstance(part, int) or typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[-1] if typing.get_args(annotation) else Any
            continue
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        field = annotation.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
    annotation = _strip_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


# --------------------------------------------------------------------------------------------
# Checks shared by the validators
# --------------------------------------------------------------------------------------------


def agent_problems(base: TD3Config, overrides: dict[str, Any]) -> list[str]:
    """What is wrong with ``base`` changed by ``overrides`` (TD3Config's own messages)."""
    unknown = sorted(set(overrides) - set(TD3Config.model_fields))
    if unknown:
        return [f"unknown TD3 field(s) {unknown}; allowed: {', '.join(TD3Config.model_fields)}"]
    try:
        TD3Config.model_validate({**base.model_dump(), **overrides})
    except ValidationError as err:
        problems = []
        for e in err.errors():
            field = ".".join(map(str, e["loc"]))
            where = f"{field}={format_value(overrides[field])}" if field in overrides else f"with {arm_name(overrides)}"
            problems.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
        return problems
    return []


def trial_problems(spec: StudySpec, overrides: dict[str, Any]) -> list[str]:
    """Cross-checks only a whole trial sees (e.g. the agent's batch size against the budget)."""
    try:
        trial_config(spec, overrides, spec.seeds[0])
    except ValidationError as err:
        return [e["msg"].removeprefix("Value error, ") for e in err.errors()]
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
        return [f"carla_pool.{_short(err)}"]
    return []


def _short(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in err.errors())


# --------------------------------------------------------------------------------------------
# Expansion into arms and trials
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialPlan:
    """One trial of a grid design: an arm (a configuration) and a seed."""

    arm: str
    overrides: dict[str, Any]
    seed: int


def arms(spec: StudySpec) -> list[tuple[str, dict[str, Any]]]:
    """The grid designs' arms, in study-file order, each as (name, overrides of the base config)."""
    base = spec.agent.model_dump()
    if spec.design == "factorial":
        names = list(spec.factors)
        combos = [dict(zip(names, values)) for values in itertools.product(*spec.factors.values())]
        changed = [{k: v for k, v in combo.items() if v != base[k]} for combo in combos]
    elif spec.design == "one_at_a_time":
        changed = [{}] + [{name: level} for name, levels in spec.factors.items() for level in levels if level != base[name]]
    else:
        return []
    named = [(arm_name(overrides), overrides) for overrides in changed]
    return named + [(arm.name or arm_name(arm.set), dict(arm.set)) for arm in spec.arms]


def expand(spec: StudySpec) -> list[TrialPlan]:
    """Every (arm, seed) trial of a grid design."""
    return [TrialPlan(name, overrides, seed) for name, overrides in arms(spec) for seed in spec.seeds]


def plan_of(spec: StudySpec, config: dict[str, Any]) -> TrialPlan:
    """The arm and seed of a Tune trial from its config.

    Grid designs put ``{"arm": name, "seed": seed}`` in each trial's config. Optuna proposes
    ``{"set": overrides}``; Tune's ``Repeater`` then runs each proposal once per seed, numbering
    the copies in ``TRIAL_INDEX``.
    """
    if "arm" in config:
        name = config["arm"]
        return TrialPlan(name, dict(arms(spec))[name], int(config["seed"]))
    overrides = dict(config["set"])
    return TrialPlan(arm_name(overrides), overrides, int(spec.seeds[config[TRIAL_INDEX]]))


def arm_name(overrides: dict[str, Any]) -> str:
    """``baseline``, or ``key=value`` pairs in the order given: the arm's name everywhere."""
    if not overrides:
        return BASELINE
    return ",".join(f"{key}={format_value(value)}" for key, value in overrides.items())


def format_value(value: Any) -> str:
    """YAML spelling (null, true, 0.01); floats from a search rounded to 4 significant digits."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        short = f"{value:.4g}"
        return repr(value) if float(short) == value else short
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def factor_names(spec: StudySpec) -> list[str]:
    """Every TD3 field the study varies anywhere: the arm runs' and trials' params."""
    names = list(spec.factors) + list(spec.distributions)
    names += [key for arm in spec.arms for key in arm.set]
    return list(dict.fromkeys(names))


def factor_values(spec: StudySpec, overrides: dict[str, Any]) -> dict[str, Any]:
    """The value of every varied field in this arm (the base value where the arm keeps it)."""
    agent = {**spec.agent.model_dump(), **overrides}
    return {name: agent[name] for name in factor_names(spec)}


def trial_config(spec: StudySpec, overrides: dict[str, Any], seed: int) -> TrialConfig:
    """The trial function's config for one arm and seed."""
    return TrialConfig.model_validate(
        {
            "env": spec.env,
            "env_settings": spec.env_settings,
            "agent": {**spec.agent.model_dump(), **overrides},
            "seed": seed,
            **spec.budget.model_dump(),
            "guard": spec.guard.model_dump(),
            "device": spec.device,
            "torch_threads": max(1, math.floor(spec.resources.cpu)),
        }
    )
