"""Tune's param space and searcher for a study's design: every trial's config carries its plan.

Grid designs put the plans themselves in the param space (``execution: population``: each
arm's member plans, one trial per arm). For ``optuna`` a proposal becomes a
plan once, as Tune asks for the trial (``PlanRepeater.suggest``), so the trainable, the
callbacks and ``params.json`` read a plan for every design and nothing expands a proposal again.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.search import Repeater, Searcher

from study.plan import PLAN, POPULATION, expand, plan_of, populations
from study.spec import StudySpec


def search(spec: StudySpec) -> tuple[dict[str, Any], Searcher | None, int]:
    """Tune's param space, search algorithm and sample count for the study's design."""
    if spec.execution == "population":
        # Largest populations first: Tune starts trials in this order, and with few, unequal trials
        # per core a large one started last would run on alone while the other cores sit idle.
        largest_first = sorted(populations(spec), key=len, reverse=True)
        members = [[plan.model_dump(mode="json") for plan in population] for population in largest_first]
        return {POPULATION: tune.grid_search(members)}, None, 1
    if spec.design != "optuna":
        return {PLAN: tune.grid_search([plan.model_dump(mode="json") for plan in expand(spec)])}, None, 1

    from ray.tune.search.optuna import OptunaSearch

    domains = {
        "uniform": lambda d: tune.uniform(d.low, d.high),
        "loguniform": lambda d: tune.loguniform(d.low, d.high),
        "int": lambda d: tune.randint(int(d.low), int(d.high) + 1),
        "choice": lambda d: tune.choice(d.values),
    }
    space = {"set": {name: domains[d.type](d) for name, d in spec.distributions.items()}}
    # Every proposal runs once per seed; Optuna learns from the seeds' mean return.
    searcher = PlanRepeater(spec, OptunaSearch(seed=spec.seeds[0]))
    return space, searcher, (spec.num_samples or 1) * len(spec.seeds)


class PlanRepeater(Repeater):
    """Ray's ``Repeater`` (each proposal once per seed, the seeds' mean reported back to the
    searcher), whose trials carry their plan beside the proposal and its copy number."""

    def __init__(self, spec: StudySpec, searcher: Searcher) -> None:
        super().__init__(searcher, repeat=len(spec.seeds), set_index=True)
        self.spec = spec

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            return config
        # The proposal's own keys stay: Tune merges them over the param space's domains.
        return {**config, PLAN: plan_of(self.spec, config).model_dump(mode="json")}
