"""Tune's search for each design hands every trial its plan (study/search.py)."""

from __future__ import annotations

from study.plan import PLAN, TrialPlan, expand
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
