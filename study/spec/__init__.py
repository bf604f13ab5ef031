"""Study files (``search_spaces/*.yaml``): what a study compares, how hard, how it decides early.

A study file names the env and its settings, the base TD3 config, the design and its factors,
seeds, budget, cadences, scheduler and guard settings, per-trial resources and where results go.
Everything is checked before Ray starts: one ``SpecError`` names every bad key with what is
allowed, so a typo costs seconds, not a cluster.

    schema.py   the file's sections and their validators (``StudySpec``)
    checks.py   what a field's own type cannot check: TD3 settings, whole trials, env settings,
                the CARLA pool
    load.py     reading a file (or a name in search_spaces/), ``--smoke``, the ``SpecError``

The expansion of a study into trials is ``study.plan``.
"""

from study.spec.load import SEARCH_SPACES, SpecError, apply_smoke, load_spec, resolve_space, validate_spec
from study.spec.schema import StudySpec

__all__ = ["SEARCH_SPACES", "SpecError", "StudySpec", "apply_smoke", "load_spec", "resolve_space", "validate_spec"]
