"""Tune's search for each design hands every trial its plan (study/search.py)."""

from __future__ import annotations

from study.plan import PLAN, POPULATION, TrialPlan, expand
from study.search import search
from study.spec import load_spec


def test_a_grid_design_puts_its_plans_in_the_param_space() -> None:
    spec = load_spec("default", smoke=True)
    space, searcher, samples = search(spec)
    assert searcher is None and samples == 1
    assert [TrialPlan.model_validate(plan) for plan in space[PLAN]["grid_search"]] == expand(spec)


def test_each_optuna_proposal_reaches_tune_as_a_plan_per_seed() -> None:
    spec = load_spec("optuna", smoke=True)
    space, searcher, samples = search(spec)
    assert searcher is not None and samples == (spec.num_samples or 1) * len(spec.seeds)
    searcher.set_search_properties("eval/return_mean", "max", space)
    plans = [TrialPlan.model_validate(searcher.suggest(f"t{i}")[PLAN]) for i in range(len(spec.seeds))]
    assert [plan.seed for plan in plans] == list(spec.seeds)
    assert len({plan.arm for plan in plans}) == 1 and plans[0].overrides  # one proposal, every seed
    for name, value in plans[0].overrides.items():
        assert getattr(plans[0].config.agent, name) == value


def test_populations_reach_tune_largest_first_each_with_its_arms_plans() -> None:
    """Tune starts trials in param-space order: the 5-seed populations before the 3-seed ones, so
    that no large one is left to run alone at the end."""
    spec = load_spec("default").model_copy(update={"execution": "population"})
    space, searcher, samples = search(spec)
    groups = [[TrialPlan.model_validate(plan) for plan in members] for members in space[POPULATION]["grid_search"]]
    assert searcher is None and samples == 1
    sizes = [len(group) for group in groups]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]
    assert sorted((plan.arm, plan.seed) for group in groups for plan in group) == sorted((p.arm, p.seed) for p in expand(spec))
    assert all(len({plan.arm for plan in group}) == 1 for group in groups)
