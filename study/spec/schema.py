"""The sections of a study file and their validators. Field order matters: later validators
read earlier fields, and each check that needs more than a field's type lives in ``checks``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from agents import TD3Config
from study.config import TrialConfig
from study.guard import GuardConfig
from study.plan import BASELINE, REGIME_NAME, arms, deep_merge, regime_budget
from study.results import as_number
from study.spec.checks import agent_problems, carla_pool_problems, check_env_settings, trial_problems
from envs import needs_server
from envs.validation import describe_errors

Design = Literal["factorial", "one_at_a_time", "optuna"]
Execution = Literal["per_seed", "population"]


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
            raise ValueError("; ".join(describe_errors(err, TrialConfig))) from None
        return self


class SchedulerConfig(BaseModel):
    """ASHA on ``eval/return_mean`` over ``env_steps``; the Q guard runs whatever this says.

    ASHA is on by default for tuning (``optuna``) and off for ablations (``factorial``,
    ``one_at_a_time``): an ablation compares arms at a common env step and counts explosions to a
    common horizon, and a trial ASHA pruned early is censored there, its seed lost to both."""

    model_config = ConfigDict(extra="forbid")

    asha: bool | None = Field(None, description="prune on return; default: on for optuna, off for ablations")
    grace_period: int | None = Field(None, gt=0, description="env steps before ASHA may prune (>= eval_every)")
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


class Regime(BaseModel):
    """A named base configuration every arm is applied to: the study's ``agent`` changed by
    ``agent``, its ``env_settings`` updated by ``env_settings``, run on ``seeds`` (default: the
    study's) for the study's ``budget`` updated by ``budget``. Crossing regimes with arms asks what
    each remedy does to a healthy run and to a diverging one in the same study, paired by seed
    within each regime; arms compare within their regime, so a regime can have a budget of its own
    (a healthy regime compared where the runaway regime's returns are, say)."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    agent: dict[str, Any] = Field(default_factory=dict, description="TD3 field -> value, over the study's agent")
    env_settings: dict[str, Any] = Field(default_factory=dict, description="over the study's env_settings")
    seeds: list[int] | None = Field(None, min_length=1, description="default: the study's seeds")
    budget: dict[str, Any] = Field(
        default_factory=dict,
        description="Budget field -> value, over the study's budget (also under --smoke: a smoke section "
        "shrinks a regime's with regimes: {name: {budget: ...}})",
    )


def population_problems(spec: StudySpec) -> list[str]:
    """Why a study cannot run an arm's seeds as one population trial, if it cannot."""
    if spec.design == "optuna":  # (whose ASHA is on by default: the one fix is the design)
        return ["execution 'population' needs a grid design (factorial or one_at_a_time): "
                "Optuna proposes one configuration per trial"]
    problems = []
    if spec.scheduler.asha:
        problems.append("execution 'population' needs scheduler.asha false: ASHA prunes whole trials, "
                        "and a population trial holds several seeds")
    if needs_server(spec.env):
        problems.append(f"execution 'population' steps an env per member in one process, and env {spec.env!r} needs "
                        "a server per env: use execution 'per_seed'")
    return problems


def regimes_longer_than_smoke(regimes: dict[str, Regime], smoke: dict[str, Any]) -> list[str]:
    """The regimes that a smoke run would run longer than the smoke's budget.steps: a regime's own
    budget is merged over the study's, the smoke's included, unless the smoke sets the regime's.
    Values as the budget will read them (YAML may give "4000"); a bad one is its validator's to report."""
    smoke_steps = as_number((smoke.get("budget") or {}).get("steps"))
    smoke_regimes = smoke.get("regimes") if isinstance(smoke.get("regimes"), dict) else {}
    longer = []
    for name, regime in regimes.items():
        shrunk = smoke_regimes.get(name)
        budget = shrunk.get("budget") if isinstance(shrunk, dict) else None
        steps = budget["steps"] if isinstance(budget, dict) and "steps" in budget else regime.budget.get("steps")
        if as_number(steps) > smoke_steps:  # NaN (none or bad) on either side compares False
            longer.append(name)
    return longer


def regime_budget_problems(spec: StudySpec, regime: str) -> list[str]:
    """Why a regime's budget is not one a trial can run, if it is not (each line names the regime)."""
    try:
        Budget.model_validate(regime_budget(spec, regime))
    except ValidationError as err:
        return [f"regimes.{regime}.budget (over the study's budget): {line}" for line in describe_errors(err, Budget)]
    return []


def seeds_problem(seeds: list[int]) -> str | None:
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        return f"seeds must be distinct integers >= 0 (got {seeds})"
    return None


class FaultInjection(BaseModel):
    """For tests only: make each trial's first attempt raise once it reaches a step.

    A retried attempt (one that starts from a checkpoint) runs clean, so a test can check that
    Tune retries the trial from its checkpoint rather than from zero.
    """

    model_config = ConfigDict(extra="forbid")

    fail_at_step: int = Field(gt=0)


class PublishedReturn(BaseModel):
    """One arm's return as a source publishes it: only figures read in the source, none reconstructed."""

    model_config = ConfigDict(extra="forbid")

    mean: float
    std: float | None = Field(None, ge=0, description="one standard deviation over trials, where the source gives one")
    trials: int | None = Field(None, gt=0, description="runs (seeds) the figure is over")
    label: str | None = Field(None, description="the arm's name in the source, e.g. 'TD3 - CDQ'")


class Reference(BaseModel):
    """Published returns for the study's arms, from one source at one env step: the report shows them
    beside the measured returns, each with its env step, so a 1M-step figure is never read as the
    study's 100k-step one."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)  # YAML's folded text ends in a newline

    source: str = Field(min_length=1, description="where the figures are: paper, table or file, version")
    env: str = Field(min_length=1, description="the env they were measured on, which may differ from the study's")
    env_steps: int = Field(gt=0, description="the env step the figures hold at")
    measure: str = Field("", description="what each figure is: which evaluations, averaged how")
    returns: dict[str, PublishedReturn] = Field(min_length=1, description="arm name -> its published return")


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
    regimes: dict[str, Regime] = Field(
        default_factory=dict, description="named base configs, each crossed with every arm (grid designs)"
    )
    distributions: dict[str, Distribution] = Field(default_factory=dict, description="optuna only")
    num_samples: int | None = Field(None, gt=0, description="optuna only: configurations to try")
    seeds: list[int] = Field(min_length=1)
    budget: Budget
    guard: GuardConfig = GuardConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    resources: Resources = Resources()
    carla_pool: dict[str, Any] | None = Field(None, description="envs.carla.pool.CarlaPoolConfig, env 'carla' only")
    max_failures: int = Field(2, ge=0, description="retries of a crashed trial, from its last checkpoint")
    max_concurrent_trials: int | None = Field(None, gt=0)
    execution: Execution = Field(
        "per_seed", description="per_seed: a Tune trial per arm and seed; population: an arm's seeds as one trial (study.population)"
    )
    device: str = Field("auto", description="torch device per trial")
    storage: str = Field("./results", description="Tune folder root (shared storage on a cluster)")
    tracking_uri: str | None = Field(None, description="MLflow; default sqlite:///<storage>/mlflow.db")
    fault_injection: FaultInjection | None = Field(None, description="testing only")
    smoke: dict[str, Any] = Field(default_factory=dict, description="overrides applied by --smoke")
    reference: list[Reference] = Field(default_factory=list, description="published returns to show beside the measured")

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

    @field_validator("regimes")
    @classmethod
    def _regime_settings(cls, regimes: dict[str, Regime], info: ValidationInfo) -> dict[str, Regime]:
        base, env = info.data.get("agent", TD3Config()), info.data.get("env")
        problems = []
        for name, regime in regimes.items():
            if not REGIME_NAME.fullmatch(name):
                problems.append(f"{name!r}: a regime's name is a letter then letters, digits, '_', '.' or '-'")
            problems += [f"{name}: {p}" for p in agent_problems(base, regime.agent)]
            if regime.seeds and (problem := seeds_problem(regime.seeds)):
                problems.append(f"{name}: {problem}")
            if env is not None and regime.env_settings:
                try:
                    check_env_settings(env, deep_merge(info.data.get("env_settings", {}), regime.env_settings))
                except ValueError as err:
                    problems.append(f"{name}: env_settings: {err}")
        if problems:
            raise ValueError("; ".join(problems))
        return regimes

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
        if problem := seeds_problem(seeds):
            raise ValueError(problem)
        return seeds

    @field_validator("smoke")
    @classmethod
    def _smoke_keys(cls, smoke: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        allowed = sorted(set(cls.model_fields) - {"name", "smoke"})
        unknown = sorted(set(smoke) - set(allowed))
        if unknown:
            raise ValueError(f"unknown keys {unknown}; allowed: {', '.join(allowed)}")
        regimes = smoke.get("regimes")
        if isinstance(regimes, dict) and (new := sorted(set(regimes) - set(info.data.get("regimes", {})))):
            # The smoke section merges into the file: a misspelt regime would add one, not shrink one.
            raise ValueError(f"regimes {new} are not regimes of the file; its regimes: {sorted(info.data.get('regimes', {}))}")
        if kept := regimes_longer_than_smoke(info.data.get("regimes", {}), smoke):
            # A regime's budget is merged over the study's, the smoke's included: it would run in full.
            raise ValueError(f"regimes {kept} would run more steps than smoke.budget.steps under --smoke (a regime's "
                             "budget wins over the smoke's): set smoke.regimes.<name>.budget.steps to at most it")
        return smoke

    @model_validator(mode="after")
    def _design_complete(self) -> StudySpec:
        problems = []
        if self.design == "optuna":
            if not self.distributions or self.num_samples is None:
                problems.append("design 'optuna' needs 'distributions' and 'num_samples'")
            if self.factors or self.arms or self.regimes:
                problems.append("design 'optuna' takes 'distributions', not 'factors', 'arms' or 'regimes'")
        else:
            if not self.factors and not self.arms:
                problems.append(f"design {self.design!r} needs 'factors' (and/or 'arms')")
            if self.distributions or self.num_samples is not None:
                problems.append(f"'distributions' and 'num_samples' are for design 'optuna', not {self.design!r}")
            names = [arm for arm, _ in arms(self)]
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                problems.append(f"arms repeat: {repeated} (an extra arm equals a factor level or another arm)")
            for regime in self.regimes or [None]:
                if regime is not None and (budget_problems := regime_budget_problems(self, regime)):
                    problems += budget_problems  # every arm's trial would repeat them
                    continue
                where = f"regime {regime}, " if regime else ""
                problems += [f"{where}arm {arm}: {p}" for arm, overrides in arms(self, regime)
                             for p in trial_problems(self, overrides, regime)]
        if self.regimes and self.design != "one_at_a_time":
            # A factorial's main effects pair trials by cell; across regimes the cells would mix.
            problems.append(f"'regimes' need design 'one_at_a_time' (each arm against its regime's baseline), not {self.design!r}")
        if self.regimes and self.reference:
            problems.append("'reference' names bare arms; a study with 'regimes' names them regime/arm: use one or the other")
        if self.scheduler.asha is None:
            self.scheduler = self.scheduler.model_copy(update={"asha": self.design == "optuna"})
        sched, budget = self.scheduler, self.budget
        if sched.asha and sched.grace_period is None:
            problems.append("scheduler.grace_period is required when ASHA prunes (scheduler.asha)")
        elif sched.asha and not budget.eval_every <= sched.grace_period <= budget.steps:
            problems.append(
                f"scheduler.grace_period ({sched.grace_period}) must lie in [budget.eval_every "
                f"({budget.eval_every}), budget.steps ({budget.steps})]: ASHA ranks on evaluation return"
            )
        if sched.asha and (own := [name for name, regime in self.regimes.items() if regime.budget]):
            problems.append(f"regimes {own} have budgets of their own, which need scheduler.asha false: ASHA ranks "
                            "every trial on rungs up to one max_t, the study's budget.steps")
        if self.execution == "population":
            problems += population_problems(self)
        if (self.env == "carla") != (self.resources.carla == 1):
            problems.append("resources.carla must be 1 exactly when env is 'carla' (one server slot per trial)")
        if (self.env == "carla") != (self.carla_pool is not None):
            problems.append("carla_pool is required for env 'carla' and only for it")
        elif self.carla_pool is not None:
            problems += carla_pool_problems(self.carla_pool)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @model_validator(mode="after")
    def _reference_names_arms(self) -> StudySpec:
        # A published figure filed under a name no trial runs would sit in the report beside nothing.
        names = [name for name, _ in arms(self)]
        problems = [
            f"reference[{i}].returns: {sorted(set(ref.returns) - set(names))} are not arms of this study; "
            f"its arms: {', '.join(names) or 'none (an optuna study has no fixed arms)'}"
            for i, ref in enumerate(self.reference) if set(ref.returns) - set(names)
        ]
        if problems:
            raise ValueError("\n".join(problems))
        return self
