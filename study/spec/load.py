"""Reading a study file: by name from ``search_spaces/`` or by path, ``--smoke`` applied, and one
``SpecError`` listing every problem at once, keys spelled as in the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from study.plan import deep_merge
from study.spec.schema import StudySpec
from envs.validation import describe_errors

SEARCH_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


class SpecError(ValueError):
    """A study file that cannot run; the message lists every bad key and what is allowed."""


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
    """Validate a study mapping; raise ``SpecError`` listing every problem at once. With ``smoke``
    the file must be valid as it is too (its smoke section names only what the file has), then
    with the smoke section merged in."""
    for merged in [False, True] if smoke else [False]:
        try:
            spec = StudySpec.model_validate(apply_smoke(data) if merged else data)
        except ValidationError as err:
            lines = describe_errors(err, StudySpec)
            mode = " (with --smoke)" if merged else ""
            raise SpecError(f"{source}{mode}: {len(lines)} problem(s)\n" + "\n".join(f"  {line}" for line in lines)) from None
    return spec


def apply_smoke(data: dict[str, Any]) -> dict[str, Any]:
    """The study with its ``smoke`` section merged in: mappings merge key by key, others replace."""
    overrides = data.get("smoke") or {}
    if not isinstance(overrides, dict):
        return data  # validation reports the malformed section
    return deep_merge({k: v for k, v in data.items() if k != "smoke"}, overrides)
