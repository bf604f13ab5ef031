"""A study's trials, each expanded once into a typed, serializable ``TrialPlan``.

A plan holds everything a trial is: its arm (name and the TD3 settings it changes), its seed, the
value of every factor the study varies, and the full, validated ``TrialConfig`` the trial runs.
Grid designs carry the plans themselves in Tune's param space, so the trainable, the scheduler's
callbacks, MLflow, the console and the analysis (``params.json``) all read the same value and
nothing expands an arm's name again.

Designs:

- ``factorial``: every combination of the listed factor levels, plus any extra ``arms``.
- ``one_at_a_time``: the baseline (the base ``agent`` config) plus each factor's other levels
  alone, plus any extra ``arms`` (settings that only make sense together, e.g. weight decay with
  its mode, or a known-bad configuration kept as a control).
- ``optuna``: Optuna proposes the settings through Ray Tune; each proposal becomes a plan once,
  in ``plan_of``, as its trial starts.

``execution: population`` runs each arm's seeds as one Tune trial (``populations``): its config
holds the member plans, each the plan its seed's single trial would have (``study.population``
trains them together; every report names its seed, so each member is filed as that trial).

An arm is named by what it changes from the base config: ``baseline``, ``tau=1.0`` or
``critic_weight_decay=0.01,weight_decay_mode=decoupled``, values spelled as in YAML.

``regimes`` (grid designs) are named base configurations crossed with every arm: the trial of arm
``a`` in regime ``r`` runs the study's agent changed by ``r``'s settings, then by ``a``'s, and is
named ``r/a`` everywhere (``runaway/baseline``, ``runaway/critic_l2=0.01``), so each regime has
its own baseline and the analysis compares arms within a regime. An arm that changes nothing in a
regime (``tau=0.005`` where the regime already has it) is that regime's baseline and is not run twice.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from agents import TD3Config
from study.config import TrialConfig

if TYPE_CHECKING:
    from study.spec import StudySpec

BASELINE = "baseline"
REGIME_SEPARATOR = "/"  # "<regime>/<arm>": no arm name or value contains it
REGIME_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
PLAN = "plan"  # the key of a grid trial's plan in its Tune config
POPULATION = "population"  # the key of a population trial's member plans (one per seed) in its Tune config
TRIAL_INDEX = "__trial_index__"  # ray.tune.search.repeater.TRIAL_INDEX, without importing Ray here


class TrialPlan(BaseModel):
    """One trial: arm, seed, the factor levels it runs at, and its resolved config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arm: str
    seed: int
    overrides: dict[str, Any]  # the TD3 settings the arm changes in the base config
    levels: dict[str, Any]  # the value of every factor the study varies, base values included
    regime: str | None = None  # the named base configuration the arm is applied to, if the study has regimes
    config: TrialConfig


def arms(spec: StudySpec, regime: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The grid designs' arms, in study-file order, each as (name, overrides of the base config).
    A factor level counts as a change when it differs from the base config's value, validated
    (``1e-3`` and ``0.001`` are one level) and, given a ``regime``, from that regime's."""
    base = base_agent(spec, regime)

    def differs(name: str, level: Any) -> bool:
        try:
            return TD3Config.model_validate({**base, name: level}).model_dump()[name] != base[name]
        except ValidationError:  # invalid with this base: a change, which the study's checks then name
            return True

    if spec.design == "factorial":
        names = list(spec.factors)
        combos = [dict(zip(names, values)) for values in itertools.product(*spec.factors.values())]
        changed = [{k: v for k, v in combo.items() if differs(k, v)} for combo in combos]
    elif spec.design == "one_at_a_time":
        changed = [{}] + [{name: level} for name, levels in spec.factors.items() for level in levels if differs(name, level)]
    else:
        return []
    named = [(arm_name(overrides), overrides) for overrides in changed]
    return named + [(arm.name or arm_name(arm.set), dict(arm.set)) for arm in spec.arms]


def base_agent(spec: StudySpec, regime: str | None = None) -> dict[str, Any]:
    """The validated TD3 settings every arm starts from: the study's agent, changed by the regime's."""
    changes = spec.regimes[regime].agent if regime is not None else {}
    return TD3Config.model_validate({**spec.agent.model_dump(), **changes}).model_dump()


def regime_budget(spec: StudySpec, regime: str) -> dict[str, Any]:
    """The budget (``Budget``'s fields) a regime's trials run: the study's, changed by the regime's."""
    return {**spec.budget.model_dump(), **spec.regimes[regime].budget}


def regime_steps(spec: StudySpec) -> dict[str, int]:
    """Each regime's env steps per trial (its budget's, else the study's)."""
    return {regime: regime_budget(spec, regime)["steps"] for regime in spec.regimes}


def expand(spec: StudySpec) -> list[TrialPlan]:
    """Every (arm, seed) trial of a grid design, arm by arm (regime by regime, if it has regimes).
    In a regime, an arm whose TD3 config equals an earlier arm's (its baseline's, above all) is
    that arm and does not run twice."""
    if not spec.regimes:
        return [make_plan(spec, name, overrides, seed) for name, overrides in arms(spec) for seed in spec.seeds]
    plans = []
    for regime, settings in spec.regimes.items():
        seeds = settings.seeds or spec.seeds
        configs = set()
        for name, overrides in arms(spec, regime):
            first = make_plan(spec, name, overrides, seeds[0], regime)
            if (config := first.config.agent.model_dump_json()) in configs:
                continue
            configs.add(config)
            plans += [first] + [make_plan(spec, name, overrides, seed, regime) for seed in seeds[1:]]
    return plans


def populations(spec: StudySpec) -> list[list[TrialPlan]]:
    """``execution: population``: every arm's seeds as one Tune trial, arm by arm as ``expand``
    orders them; each member's plan is the one its single trial would run."""
    by_arm: dict[str, list[TrialPlan]] = {}
    for plan in expand(spec):
        by_arm.setdefault(plan.arm, []).append(plan)
    return list(by_arm.values())


def members_of(spec: StudySpec, config: dict[str, Any]) -> list[TrialPlan]:
    """The plans one Tune trial runs: its population's members, in seed order, or its one plan."""
    if POPULATION in config:
        return [TrialPlan.model_validate(plan) for plan in config[POPULATION]]
    return [plan_of(spec, config)]


def planned_steps(config: dict[str, Any]) -> int | None:
    """The env steps a Tune trial runs to, read from the plans in its config (a population's
    members are one arm's seeds, in one regime: one budget); None for a config without plans (a
    trial of a study started before plans)."""
    plans = config[POPULATION] if POPULATION in config else [config[PLAN]] if PLAN in config else []
    return max((int(plan["config"]["steps"]) for plan in plans), default=None)


def member_id(trial_id: str, config: dict[str, Any], seed: Any) -> str:
    """The id of one seed's run of a Tune trial: the trial's own id, or for a population member
    ``<trial id>-s<seed>``. MLflow's ``trial_id`` tag, the analysis' ``trial_id`` column and the
    scheduler's records all use it, so a member is a trial everywhere past the trainable."""
    return f"{trial_id}-s{int(seed)}" if POPULATION in config else trial_id


def make_plan(spec: StudySpec, arm: str, overrides: dict[str, Any], seed: int, regime: str | None = None) -> TrialPlan:
    """The plan of one arm and seed: the base config changed by the regime, then by the arm; the
    study's budget changed by the regime's."""
    base = spec.regimes[regime] if regime is not None else None
    agent = {**spec.agent.model_dump(), **(base.agent if base else {}), **overrides}
    env_settings = deep_merge(spec.env_settings, base.env_settings) if base else spec.env_settings
    config = TrialConfig.model_validate(
        {
            "env": spec.env,
            "env_settings": env_settings,
            "agent": agent,
            "seed": seed,
            **(regime_budget(spec, regime) if regime is not None else spec.budget.model_dump()),
            "guard": spec.guard.model_dump(),
            "device": spec.device,
            "torch_threads": max(1, math.floor(spec.resources.cpu)),
        }
    )
    validated = config.agent.model_dump(mode="json")  # "1e-3" as 0.001; tuples as the lists JSON reads back
    levels = {name: validated[name] for name in factor_names(spec)}
    if regime is not None:
        arm = f"{regime}{REGIME_SEPARATOR}{arm}"
    return TrialPlan(arm=arm, seed=seed, overrides=overrides, levels=levels, regime=regime, config=config)


def regime_of(arm: str) -> str | None:
    """The regime an arm's trials ran in (``runaway/tau=0.005`` -> ``runaway``), None without regimes."""
    return arm.split(REGIME_SEPARATOR, 1)[0] if REGIME_SEPARATOR in arm else None


def baseline_of(arm: str) -> str:
    """The arm an arm is compared with: its regime's baseline (``runaway/baseline``), else ``baseline``."""
    regime = regime_of(arm)
    return BASELINE if regime is None else f"{regime}{REGIME_SEPARATOR}{BASELINE}"


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``: mappings (a regime's ``reward``, a smoke section's ``budget``)
    merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in update.items():
        both_mappings = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = deep_merge(merged[key], value) if both_mappings else value
    return merged


def plan_of(spec: StudySpec, config: dict[str, Any]) -> TrialPlan:
    """The plan of a Tune trial from its config, where every design puts it (``{"plan": ...}``).

    A config without one is an Optuna proposal (``{"set": overrides}``, numbered by Tune's
    ``Repeater`` in ``TRIAL_INDEX``), which ``study.search`` turns into its plan here, or a trial
    of a study started before plans (grid: ``{"arm", "seed", "set"}``) resumed across the upgrade.
    """
    if PLAN in config:
        return TrialPlan.model_validate(config[PLAN])
    overrides = dict(config["set"])
    seed = config["seed"] if "seed" in config else spec.seeds[config[TRIAL_INDEX]]
    return make_plan(spec, config.get("arm") or arm_name(overrides), overrides, int(seed))


def arm_name(overrides: dict[str, Any]) -> str:
    """``baseline``, or ``key=value`` pairs in the order given: the arm's name everywhere."""
    if not overrides:
        return BASELINE
    return ",".join(f"{key}={format_value(value)}" for key, value in overrides.items())


def format_value(value: Any, *, exact: bool = False) -> str:
    """YAML spelling (null, true, 0.01). In an arm's name a float from a search is rounded to 4
    significant digits; ``exact`` keeps every digit (a factor level in the analysis' tables)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and exact:
        return repr(value)
    if isinstance(value, float):
        short = f"{value:.4g}"
        return repr(value) if float(short) == value else short
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v, exact=exact) for v in value) + "]"
    return str(value)


def factor_names(spec: StudySpec) -> list[str]:
    """Every TD3 field the study varies anywhere: the arm runs' and trials' params."""
    names = list(spec.factors) + list(spec.distributions)
    names += [key for arm in spec.arms for key in arm.set]
    names += [key for regime in spec.regimes.values() for key in regime.agent]
    return list(dict.fromkeys(names))
