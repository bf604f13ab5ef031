"""Study files: validation before anything runs, and expansion into arms and trials."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents import TD3Config
from study.plan import PLAN, POPULATION, TRIAL_INDEX, arm_name, arms, expand, format_value, make_plan, member_id, members_of, plan_of, populations
from study.results import decode_param
from study.spec import SEARCH_SPACES, SpecError, apply_smoke, load_spec, validate_spec

BASE: dict[str, Any] = {
    "name": "unit",
    "env": "Pendulum-v1",
    "agent": {"learning_starts": 500},
    "design": "one_at_a_time",
    "factors": {"critic_l2": [0.0, 0.01], "tau": [0.005, 0.02, 1.0]},
    "arms": [
        {"set": {"critic_weight_decay": 0.01, "weight_decay_mode": "decoupled"}},
        {"name": "no_target_ddpg", "set": {"tau": 1.0, "clipped_double_q": False, "policy_delay": 1}},
    ],
    "seeds": [0, 1],
    "budget": {"steps": 4_000, "eval_every": 1_000, "report_every": 500, "checkpoint_every": 1_000},
    "scheduler": {"grace_period": 2_000},
    "smoke": {"seeds": [0], "budget": {"steps": 2_000}, "scheduler": {"grace_period": 1_000}},
}


# A published figure set as the study file's ``reference`` holds them (its returns per test).
PUBLISHED: dict[str, Any] = {"source": "a paper, Table 2", "env": "Pendulum-v0", "env_steps": 4_000,
                             "returns": {"baseline": {"mean": -150.0}}}


def spec_with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


@pytest.mark.parametrize("name", sorted(p.stem for p in SEARCH_SPACES.glob("*.yaml")))
@pytest.mark.parametrize("smoke", [False, True])
def test_every_shipped_study_file_validates(name: str, smoke: bool) -> None:
    spec = load_spec(name, smoke=smoke)
    assert spec.name == name
    assert expand(spec) or spec.design == "optuna"
    if name == "default" and not smoke:  # issue 12's 25 minutes: the healthy regime runs 4,000 steps
        assert {(p.regime, p.config.steps) for p in expand(spec)} == {("td3_defaults", 4_000), (RUNAWAY, 7_000)}


def test_shipped_spaces_include_the_ones_the_issue_asks_for() -> None:
    assert {"default", "carla_ablation", "td3_paper_ablation", "optuna"} <= {p.stem for p in SEARCH_SPACES.glob("*.yaml")}


RUNAWAY = "seed_reward_lr1e-3_tau0.05"
REMEDIES = {"critic_l2=0.01", "critic_weight_decay=0.01", "adamw_0.1", "slower_target", "reward_clip=1.0",
            "critic_layer_norm=true"}


def test_default_study_crosses_every_remedy_with_a_healthy_and_a_runaway_regime() -> None:
    spec = load_spec("default")
    assert spec.env == "drive" and spec.env_settings.get("observation") == "vector"
    assert spec.agent == TD3Config() and not spec.scheduler.asha  # TD3's defaults, every trial to its budget
    plans = expand(spec)
    by_regime: dict[str, set[str]] = {}
    for plan in plans:
        by_regime.setdefault(plan.regime, set()).add(plan.arm.split("/", 1)[1])
    assert by_regime[RUNAWAY] == {"baseline", *REMEDIES}
    assert by_regime["td3_defaults"] == {"baseline", *REMEDIES} - {"slower_target"}  # TD3's tau is its baseline
    runaway = next(p for p in plans if p.arm == f"{RUNAWAY}/baseline").config
    assert (runaway.agent.clipped_double_q, runaway.agent.target_policy_smoothing, runaway.agent.policy_delay) == (True, True, 2)
    assert runaway.env_settings["max_episode_steps"] == 10 and runaway.env_settings["reward"]["collision_penalty"] == 0.0
    assert sum(p.arm == f"{RUNAWAY}/baseline" for p in plans) >= 5  # the issue's 5 seeds
    assert next(p for p in plans if p.arm == f"{RUNAWAY}/slower_target").config.agent.tau == 0.005
    smoke = load_spec("default", smoke=True)
    assert {p.arm for p in expand(smoke)} >= {f"{RUNAWAY}/baseline", "td3_defaults/baseline", f"{RUNAWAY}/critic_l2=0.01"}
    assert smoke.budget.steps < spec.budget.steps


def test_one_at_a_time_is_the_baseline_plus_each_other_level_alone_plus_extra_arms() -> None:
    spec = validate_spec(BASE)
    assert arms(spec) == [
        ("baseline", {}),
        ("critic_l2=0.01", {"critic_l2": 0.01}),
        ("tau=0.02", {"tau": 0.02}),
        ("tau=1.0", {"tau": 1.0}),
        ("critic_weight_decay=0.01,weight_decay_mode=decoupled", {"critic_weight_decay": 0.01, "weight_decay_mode": "decoupled"}),
        ("no_target_ddpg", {"tau": 1.0, "clipped_double_q": False, "policy_delay": 1}),
    ]
    assert [(p.arm, p.seed) for p in expand(spec)][:3] == [("baseline", 0), ("baseline", 1), ("critic_l2=0.01", 0)]
    assert len(expand(spec)) == 6 * 2


def test_factorial_is_every_combination_named_by_what_differs_from_the_base() -> None:
    spec = validate_spec(spec_with(design="factorial", arms=[]))
    names = [name for name, _ in arms(spec)]
    assert names == [
        "baseline", "tau=0.02", "tau=1.0",
        "critic_l2=0.01", "critic_l2=0.01,tau=0.02", "critic_l2=0.01,tau=1.0",
    ]


def test_a_plan_holds_every_varied_field_with_base_values_where_the_arm_keeps_them() -> None:
    spec = validate_spec(BASE)
    assert make_plan(spec, "tau=1.0", {"tau": 1.0}, 0).levels == {
        "critic_l2": 0.0, "tau": 1.0, "critic_weight_decay": 0.0, "weight_decay_mode": "coupled",
        "clipped_double_q": True, "policy_delay": 2,
    }


REGIMES = {
    "healthy": {"description": "the base config as it is"},
    "runaway": {"agent": {"lr_critic": 0.003, "tau": 0.02}, "env_settings": {"g": 12.0}, "seeds": [0, 1, 2]},
}


def test_regimes_cross_every_arm_with_each_regime_and_name_trials_regime_slash_arm() -> None:
    spec = validate_spec(spec_with(regimes=REGIMES))
    plans = expand(spec)
    healthy = [(p.arm, p.seed) for p in plans if p.regime == "healthy"]
    assert healthy[:3] == [("healthy/baseline", 0), ("healthy/baseline", 1), ("healthy/critic_l2=0.01", 0)]
    assert len(healthy) == len(arms(spec)) * 2
    runaway = {p.arm: p for p in plans if p.regime == "runaway"}
    # tau=0.02 is the runaway regime's own setting: that arm is its baseline, not run twice; the
    # study's base level, tau=0.005, is a change there and runs
    assert "runaway/tau=0.02" not in runaway and "healthy/tau=0.02" in {p.arm for p in plans}
    assert runaway["runaway/tau=0.005"].config.agent.tau == 0.005 and "healthy/tau=0.005" not in {p.arm for p in plans}
    assert sum(p.arm == "runaway/critic_l2=0.01" for p in plans) == 3  # the regime's own seeds
    l2 = runaway["runaway/critic_l2=0.01"].config
    assert (l2.agent.lr_critic, l2.agent.tau, l2.agent.critic_l2) == (0.003, 0.02, 0.01)  # regime, then arm
    assert l2.env_settings == {"g": 12.0}
    assert runaway["runaway/tau=1.0"].config.agent.tau == 1.0  # the arm wins over the regime
    assert runaway["runaway/baseline"].levels["lr_critic"] == 0.003  # the regime's fields are params too


def test_in_a_regime_an_arm_equal_to_an_earlier_one_once_validated_does_not_run_twice() -> None:
    """YAML reads 1e-3 as the string '1e-3'; validated, it is the regime's 0.001."""
    data = spec_with(factors={"lr_critic": ["1e-3", 3e-4]}, arms=[{"name": "same", "set": {"lr_critic": 0.001}}],
                     regimes={"fast": {"agent": {"lr_critic": 0.001}}})
    names = [p.arm for p in expand(validate_spec(data)) if p.seed == 0]
    assert names == ["fast/baseline", "fast/lr_critic=0.0003"]
    assert expand(validate_spec(data))[0].levels["lr_critic"] == 0.001
    plain = spec_with(agent={"lr_critic": 0.001}, factors={"lr_critic": ["1e-3", 3e-4]}, arms=[])
    assert [name for name, _ in arms(validate_spec(plain))] == ["baseline", "lr_critic=0.0003"]


def test_a_regimes_budget_changes_only_its_own_trials() -> None:
    spec = validate_spec(spec_with(regimes={**REGIMES, "healthy": {"budget": {"steps": 2_000, "eval_every": 500}}},
                                   scheduler={"asha": False}))
    budgets = {(p.regime, p.config.steps, p.config.eval_every, p.config.checkpoint_every) for p in expand(spec)}
    assert budgets == {("healthy", 2_000, 500, 1_000), ("runaway", 4_000, 1_000, 1_000)}


@pytest.mark.parametrize("budget", [{"steps": 2_000}, {"steps": 4_000}, {"eval_every": 2_000}])
def test_asha_refuses_regimes_with_budgets_of_their_own(budget: dict[str, Any]) -> None:
    """ASHA's rungs lead to one max_t and rank on evaluations: a regime that ends sooner would read
    as pruned, and one evaluated on another cadence would be ranked on no return; even an equal
    budget is refused, one rule being clearer than its exceptions."""
    data = spec_with(regimes={**REGIMES, "healthy": {"budget": budget}}, scheduler={"asha": True, "grace_period": 2_000}, smoke={})
    with pytest.raises(SpecError) as caught:
        validate_spec(data)
    assert "regimes ['healthy'] have budgets of their own, which need scheduler.asha false" in str(caught.value)


def test_a_smoke_run_does_not_keep_a_regime_longer_than_its_own_budget() -> None:
    """The smoke's budget.steps (2,000) is merged under a regime's own 3,000: the smoke must shrink it too."""
    regimes = {**REGIMES, "healthy": {"budget": {"steps": 3_000}}}
    with pytest.raises(SpecError) as caught:
        validate_spec(spec_with(regimes=regimes, scheduler={"asha": False}), smoke=True)
    assert "regimes ['healthy'] would run more steps than smoke.budget.steps under --smoke" in str(caught.value)
    for budget in ({"eval_every": 500}, {"steps": "2500"}):  # the smoke's own regime budget must shrink the steps too
        with pytest.raises(SpecError, match=r"regimes \['healthy'\] would run more steps"):
            smoke = {**BASE["smoke"], "scheduler": {"asha": False}, "regimes": {"healthy": {"budget": budget}}}
            validate_spec(spec_with(regimes=regimes, scheduler={"asha": False}, smoke=smoke), smoke=True)
    shrunk = {**BASE["smoke"], "scheduler": {"asha": False}, "regimes": {"healthy": {"budget": {"steps": 1_000}}}}
    spec = validate_spec(spec_with(regimes=regimes, scheduler={"asha": False}, smoke=shrunk), smoke=True)
    assert {(p.regime, p.config.steps) for p in expand(spec)} == {("healthy", 1_000), ("runaway", 2_000)}


def test_a_regime_merges_nested_env_settings_key_by_key() -> None:
    spec = validate_spec(spec_with(env="drive", env_settings={"observation": "vector", "reward": {"jerk_weight": 0.5}},
                                   regimes={"shaped": {"env_settings": {"reward": {"lateral_weight": 0.0}}}}))
    settings = expand(spec)[0].config.env_settings
    assert settings == {"observation": "vector", "reward": {"jerk_weight": 0.5, "lateral_weight": 0.0}}


@pytest.mark.parametrize(
    ("regimes", "fragment"),
    [
        ({"1st": {}}, "'1st': a regime's name is a letter"),
        ({"fast": {"agent": {"tua": 0.1}}}, "fast: unknown TD3 field(s) ['tua']"),
        ({"fast": {"agent": {"tau": 2.0}}}, "fast: tau=2.0: Input should be less than or equal to 1"),
        ({"heavy": {"env_settings": {"no_such_setting": 1}}}, "heavy: env_settings:"),
        ({"fast": {"seeds": [1, 1]}}, "seeds must be distinct"),
        ({"fast": {"gamma": 0.9}}, "regimes.fast.gamma"),
        ({"short": {"budget": {"stpes": 2_000}}}, "regimes.short.budget (over the study's budget): stpes: unknown key; allowed: steps, eval_every"),
        ({"short": {"budget": {"steps": 0}}}, "regimes.short.budget (over the study's budget): steps: Input should be greater than 0"),
        # valid alone, but not with an arm: the arm's buffer cannot hold the regime's batch
        ({"big": {"agent": {"batch_size": 2048}}}, "regime big, arm"),
    ],
)
def test_a_bad_regime_is_refused_naming_the_regime(regimes: dict[str, Any], fragment: str) -> None:
    data = spec_with(regimes=regimes, arms=[*BASE["arms"], {"name": "small_buffer", "set": {"buffer_size": 1024}}])
    with pytest.raises(SpecError) as caught:
        validate_spec(data)
    assert fragment in str(caught.value)


def test_every_bad_regime_is_named_at_once() -> None:
    regimes = {"a": {"seeds": [1, 1]}, "b": {"agent": {"tua": 0.1}}, "c": {"agent": {"tau": 2.0}}}
    with pytest.raises(SpecError) as caught:
        validate_spec(spec_with(regimes=regimes))
    for fragment in ("a: seeds must be distinct", "b: unknown TD3 field(s) ['tua']", "c: tau=2.0"):
        assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"design": "factorial", "arms": []}, "'regimes' need design 'one_at_a_time'"),
        ({"reference": [{"source": "a paper", "env": "Pendulum-v1", "env_steps": 1000, "measure": "mean",
                         "returns": {"baseline": {"mean": 1.0}}}]}, "'reference' names bare arms"),
        ({"smoke": {"regimes": {"healty": {"seeds": [0]}}}}, "regimes ['healty'] are not regimes of the file"),
    ],
)
def test_regimes_refuse_what_they_cannot_mean(changes: dict[str, Any], fragment: str) -> None:
    for smoke in (False, True):
        with pytest.raises(SpecError) as caught:
            validate_spec(spec_with(regimes=REGIMES, **changes), smoke=smoke)
        assert fragment in str(caught.value)


def test_optuna_takes_no_regimes() -> None:
    optuna = spec_with(design="optuna", factors={}, arms=[], num_samples=2, regimes=REGIMES,
                       distributions={"tau": {"type": "loguniform", "low": 0.001, "high": 0.05}})
    with pytest.raises(SpecError, match="not 'factors', 'arms' or 'regimes'"):
        validate_spec(optuna)


def test_a_plans_config_applies_the_arm_seed_budget_and_one_thread_per_cpu() -> None:
    cfg = make_plan(validate_spec(BASE), "tau=0.02", {"tau": 0.02}, seed=1).config
    assert (cfg.agent.tau, cfg.agent.learning_starts, cfg.seed, cfg.steps) == (0.02, 500, 1, 4_000)
    assert cfg.torch_threads == 1 and cfg.env == "Pendulum-v1"


def test_plans_travel_as_json_and_read_back_equal() -> None:
    spec = validate_spec(BASE)
    plan = next(p for p in expand(spec) if p.arm == "no_target_ddpg" and p.seed == 1)
    assert plan.overrides == {"tau": 1.0, "clipped_double_q": False, "policy_delay": 1}
    assert plan.config.agent.tau == 1.0 and plan.config.seed == 1
    carried = json.loads(json.dumps({PLAN: plan.model_dump(mode="json")}))  # as Tune's params.json holds it
    assert plan_of(spec, carried) == plan


def test_an_optuna_proposal_becomes_a_plan_per_seed() -> None:
    spec = validate_spec(BASE)
    plan = plan_of(spec, {"set": {"tau": 0.0123456}, TRIAL_INDEX: 1})
    assert (plan.arm, plan.seed, plan.config.agent.tau) == ("tau=0.01235", 1, 0.0123456)


def test_a_trial_of_a_study_started_before_plans_reads_as_its_plan() -> None:
    """A grid trial's config before plans: {arm, seed, set} (a study resumed across the upgrade)."""
    spec = validate_spec(BASE)
    plan = next(p for p in expand(spec) if p.arm == "no_target_ddpg" and p.seed == 1)
    assert plan_of(spec, {"arm": "no_target_ddpg", "seed": 1, "set": plan.overrides}) == plan


def test_a_levels_exact_spelling_keeps_every_digit() -> None:
    assert format_value(0.041088479607591016) == "0.04109"  # in an arm's name
    assert decode_param(format_value(0.041088479607591016, exact=True)) == 0.041088479607591016
    assert format_value([0.1, None], exact=True) == "[0.1,null]"


def test_arm_names_spell_values_as_yaml() -> None:
    assert arm_name({}) == "baseline"
    assert arm_name({"reward_clip": None, "clipped_double_q": False}) == "reward_clip=null,clipped_double_q=false"
    assert arm_name({"hidden_sizes": (64, 64), "lr_actor": 3e-4}) == "hidden_sizes=[64,64],lr_actor=0.0003"


def test_smoke_merges_mappings_and_replaces_lists() -> None:
    merged = apply_smoke(BASE)
    assert merged["seeds"] == [0]
    assert merged["budget"] == {**BASE["budget"], "steps": 2_000}
    assert "smoke" not in merged
    assert validate_spec(BASE, smoke=True).budget.steps == 2_000


def test_a_bad_file_names_every_bad_key_in_one_error() -> None:
    data = spec_with(
        name="has space",
        agent={"tau": 1.5, "gama": 0.9},
        design="grid",
        factors={"critic_l2": [-1.0], "tua": [0.1]},
        seeds=[0, 0],
        scheduler={"grace_period": 2_000, "reduction_factor": 1},
        resources={"cpu": 0},
        typo_key=1,
    )
    with pytest.raises(SpecError) as caught:
        validate_spec(data)
    message = str(caught.value)
    for key in ("name:", "agent.tau:", "agent.gama:", "design:", "critic_l2=-1.0", "'tua'", "seeds:",
                "scheduler.reduction_factor:", "resources.cpu:", "typo_key:"):
        assert key in message, f"{key} not named in:\n{message}"
    assert "allowed: gamma, tau" in message  # an unknown key says what is allowed
    assert "'factorial', 'one_at_a_time' or 'optuna'" in message
    assert "9 problem(s)" in message  # both bad factors share the factors line


def test_bad_env_settings_are_refused_before_anything_runs() -> None:
    with pytest.raises(SpecError, match="env_settings"):
        validate_spec(spec_with(env_settings={"no_such_setting": 1}))
    with pytest.raises(SpecError, match="unknown env"):
        validate_spec(spec_with(env="NoSuchEnv-v9"))


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"arms": [{"set": {"tau": 1.0}}]}, "arms repeat: ['tau=1.0']"),
        ({"arms": [{"name": "baseline", "set": {"tau": 0.5}}]}, "'baseline' is the base config's arm"),
        ({"arms": [{"name": "empty", "set": {}}]}, "arms[0].set: Dictionary should have at least 1 item"),
        ({"scheduler": {"asha": True, "grace_period": 500}}, "grace_period (500) must lie in [budget.eval_every"),
        ({"scheduler": {"asha": True}}, "scheduler.grace_period is required when ASHA prunes"),
        ({"budget": {**BASE["budget"], "eval_every": 700}}, "multiples of report_every"),
        ({"design": "optuna"}, "design 'optuna' needs 'distributions' and 'num_samples'"),
        ({"factors": {}, "arms": []}, "needs 'factors'"),
        ({"resources": {"carla": 1}}, "resources.carla must be 1 exactly when env is 'carla'"),
        ({"factors": {"tau": [0.01, 0.01]}}, "levels repeat"),
        ({"smoke": {"budgett": {}}}, "unknown keys ['budgett']"),
        ({"agent": {"batch_size": 512, "buffer_size": 256}}, "buffer_size"),  # TD3Config words the rule
        ({"reference": [{**PUBLISHED, "returns": {"TD3": {"mean": 1.0}, "tau=1.0": {"mean": 2.0}}}]},
         "reference[0].returns: ['TD3'] are not arms of this study; its arms: baseline, critic_l2=0.01, tau=0.02, "
         "tau=1.0, critic_weight_decay=0.01,weight_decay_mode=decoupled, no_target_ddpg"),
        ({"reference": [{**PUBLISHED, "returns": {"baseline": {"mean": 1.0, "sd": 2.0}}}]},
         "reference[0].returns.baseline.sd: unknown key; allowed: mean, std, trials, label"),
        ({"reference": [{**PUBLISHED, "steps": 10}]},
         "reference[0].steps: unknown key; allowed: source, env, env_steps, measure, returns"),
        ({"reference": [{**PUBLISHED, "returns": {"baseline": {"mean": 1.0, "std": -1.0}}}]},
         "reference[0].returns.baseline.std: Input should be greater than or equal to 0"),
    ],
)
def test_inconsistent_studies_are_refused_with_the_rule_they_break(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        validate_spec(spec_with(**changes))
    assert fragment in str(caught.value)


def test_reference_holds_published_returns_of_the_studys_own_arms() -> None:
    spec = validate_spec(spec_with(reference=[{**PUBLISHED, "returns": {"no_target_ddpg": {"mean": -900.0, "std": 40.0, "trials": 3}}}]))
    (ref,) = spec.reference
    assert (ref.env_steps, ref.returns["no_target_ddpg"].std, ref.returns["no_target_ddpg"].trials) == (4_000, 40.0, 3)
    assert validate_spec(BASE).reference == []  # optional: most studies cite nothing


def test_td3_paper_ablation_runs_halfcheetah_with_the_papers_returns_for_its_arms() -> None:
    """The paper's MuJoCo task through gymnasium's mujoco extra, and a published figure for every arm
    at the paper's 1M steps, TD3's also at the study's own budget (the like-for-like comparison)."""
    spec = load_spec("td3_paper_ablation")
    assert spec.env == "HalfCheetah-v5"
    names = [name for name, _ in arms(spec)]
    table, curve = spec.reference
    assert (table.env_steps, sorted(table.returns)) == (1_000_000, sorted(names))
    assert curve.env_steps == spec.budget.steps and list(curve.returns) == ["baseline"]
    assert load_spec("td3_paper_ablation", smoke=True).reference == spec.reference


def test_optuna_distributions_are_checked_at_their_edges() -> None:
    optuna = spec_with(
        design="optuna", factors={}, arms=[], num_samples=4,
        distributions={"tau": {"type": "loguniform", "low": 0.001, "high": 2.0}, "reward_clip": {"type": "choice", "values": [None, 5.0]}},
    )
    with pytest.raises(SpecError, match=r"tau=2.0: Input should be less than or equal to 1"):
        validate_spec(optuna)
    optuna["distributions"]["tau"]["high"] = 0.05
    assert validate_spec(optuna).num_samples == 4


def test_a_missing_file_lists_the_shipped_spaces(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="shipped spaces: .*default"):
        load_spec("no_such_space")
    bad = tmp_path / "list.yaml"
    bad.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(SpecError, match="a study file is a mapping"):
        load_spec(str(bad))


@pytest.mark.parametrize(("design", "asha"), [("one_at_a_time", False), ("factorial", False), ("optuna", True)])
def test_asha_prunes_tuning_and_leaves_ablations_whole_unless_told(design: str, asha: bool) -> None:
    changes: dict[str, Any] = {"design": design}
    if design == "optuna":
        changes |= {"factors": {}, "arms": [], "num_samples": 2,
                    "distributions": {"tau": {"type": "loguniform", "low": 0.001, "high": 0.1}}}
    assert validate_spec(spec_with(**changes)).scheduler.asha is asha
    told = validate_spec(spec_with(**changes, scheduler={"asha": not asha, "grace_period": 2_000}))
    assert told.scheduler.asha is (not asha)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"scheduler": {"asha": True, "grace_period": 2_000}}, "execution 'population' needs scheduler.asha false"),
        ({"design": "optuna", "factors": {}, "arms": [], "distributions": {"tau": {"type": "loguniform", "low": 0.001, "high": 0.1}},
          "num_samples": 2}, "execution 'population' needs a grid design"),
        ({"env": "carla", "env_settings": {}, "resources": {"carla": 1}, "carla_pool": {"mode": "attach", "ports": [2000]}},
         "env 'carla' needs a server per env: use execution 'per_seed'"),
        ({"execution": "populations"}, "execution: Input should be 'per_seed' or 'population'"),
    ],
)
def test_populations_are_refused_where_a_trial_cannot_hold_an_arms_seeds(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        validate_spec(spec_with(**{"execution": "population", "scheduler": {}, **changes}))
    assert fragment in str(caught.value)


def test_a_population_per_arm_holds_the_plans_its_seeds_single_trials_would_run() -> None:
    spec = validate_spec(spec_with(execution="population", scheduler={}))
    groups = populations(spec)
    assert [plan for group in groups for plan in group] == expand(spec)  # every trial once, in order
    assert [[plan.seed for plan in group] for group in groups] == [spec.seeds] * len(arms(spec))
    assert [group[0].arm for group in groups] == [name for name, _ in arms(spec)]
    config = {POPULATION: [plan.model_dump(mode="json") for plan in groups[1]]}
    assert members_of(spec, config) == groups[1]
    assert member_id("t7", config, 1) == "t7-s1"
    assert member_id("t7", {PLAN: groups[1][1].model_dump(mode="json")}, 1) == "t7"  # a single trial keeps Tune's id
