"""How a pydantic validation error reads to a user: one line per problem, in the user's own keys.

The same formatter serves the three places users write settings, each spelling keys its way:

- study files: paths as written in the YAML (``budget.steps``, ``arms[0].set``);
- ``--set`` overrides: flat keys (``tau``, ``guard.patience``; TD3 fields without ``agent.``);
- env settings: the setting's name (``n_npcs``, ``reward.collision``), after the env's label.

Each line names the key, what is wrong, what is allowed (the keys a mapping accepts, for an unknown
key) and what was given. ``allowed_keys`` is the one walker of "which keys may stand here".
It lives in ``envs``, the lowest package that validates user settings; ``study`` builds on it.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

Location = tuple[int | str, ...]


def path_key(loc: Location) -> str:
    """A location as a path in a YAML file: ``arms[0].set``, ``budget.steps``."""
    return ".".join(f"[{part}]" if isinstance(part, int) else str(part) for part in loc).replace(".[", "[")


def describe_errors(
    err: ValidationError, model: type[BaseModel], key: Callable[[Location], str] = path_key
) -> list[str]:
    """One line per problem of ``err`` (raised by ``model``), keys spelled by ``key``.

    A check across several fields (a model validator) has no location: its own message names them.
    A multi-line message keeps one line per part, each under the key.
    """
    lines = []
    for problem in err.errors():
        loc = problem["loc"]
        where = key(loc)
        if problem["type"] == "extra_forbidden":
            allowed = allowed_keys(model, loc[:-1])
            message = f"unknown key; allowed: {', '.join(allowed)}" if allowed else "unknown key"
        elif problem["type"] == "missing":
            message = "required key is missing"
        else:
            message = problem["msg"].removeprefix("Value error, ")
        given = problem.get("input")
        quiet = problem["type"] in ("missing", "extra_forbidden") or isinstance(given, (dict, list)) or not where
        shown = "" if quiet else f" (got {given!r})"
        for i, part in enumerate(message.split("\n")):
            lines.append(f"{where}: {part}{shown if i == 0 else ''}" if where else part)
    return lines


def allowed_keys(model: type[BaseModel], loc: Location) -> list[str]:
    """The keys a mapping at ``loc`` inside ``model`` may hold (empty if it is not a model)."""
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
