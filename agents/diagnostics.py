"""Reductions of an update's tensors into the DESIGN.md metrics, under their exact names.

The actor-path metrics (``debug/actor_q_*``) are Q1(s, pi(s)) on the actor step's batch, the value
the actor climbs; ``train/q1_value`` and ``debug/q1_*`` are Q1 on the buffer's actions. Keeping
them apart is the point: in the CARLA run the first looked healthy (about 40 to 70) while the
second ran to millions. ``debug/action_gap`` and ``debug/actor_saturation`` say why that can
happen: an actor whose actions the buffer never holds climbs the critic where it extrapolates.

All reductions stay on the device; ``to_floats`` reads them back in one transfer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from agents.td3 import ActorStep, CriticStep

# An action component counts as saturated within 1% of the range's width of a bound: the
# normalized range [-1, 1] is 2 wide.
SATURATION_MARGIN = 0.02


def _stats(prefix: str, x: Tensor, names: tuple[str, ...] = ("mean", "max", "min", "std")) -> dict[str, Tensor]:
    reductions: dict[str, Callable[[], Tensor]] = {"mean": x.mean, "max": x.max, "min": x.min, "std": x.std}
    return {f"{prefix}_{name}": reductions[name]() for name in names}


def critic_metrics(step: CriticStep, reward: Tensor, terminated: Tensor, gamma: float) -> dict[str, Tensor]:
    """Critic-side metrics of one update: Q on buffer actions, its target, TD errors, the batch's rewards.

    ``reward`` is the batch's raw reward (clipping, when on, acts inside the target only).
    """
    q1, q2 = step.q
    return {
        "train/critic_loss": step.loss,
        "train/q1_value": q1.mean(),
        "train/q2_value": q2.mean(),
        **_stats("debug/q1", q1, ("max", "min", "std")),
        **_stats("debug/q2", q2, ("max", "min", "std")),
        **_stats("debug/target_q", step.target),
        "debug/td_error_q1": (q1 - step.target).abs().mean(),
        "debug/td_error_q2": (q2 - step.target).abs().mean(),
        **_stats("debug/reward", reward),
        "debug/done_ratio": terminated.mean(),
        "debug/effective_discount": gamma * (1.0 - terminated).mean(),
        "gradients/critic_cnn_norm": step.grad_norms[0],
        "gradients/critic_mlp_norm": step.grad_norms[1],
    }


def actor_metrics(step: ActorStep | None) -> dict[str, Tensor]:
    """Actor-path metrics of the most recent actor step; none before the first one.

    Absent rather than NaN: a NaN actor-path Q means the critic diverged, while no actor step
    yet means there is nothing for the guard to judge.
    """
    if step is None:
        return {}
    gap = torch.linalg.vector_norm(step.action - step.buffer_action, dim=1).mean()
    saturated = (step.action.abs() >= 1.0 - SATURATION_MARGIN).float().mean()
    return {
        "train/actor_loss": step.loss,
        **_stats("debug/actor_q", step.q),
        "debug/action_gap": gap,
        "debug/actor_saturation": saturated,
        "gradients/actor_cnn_norm": step.grad_norms[0],
        "gradients/actor_mlp_norm": step.grad_norms[1],
    }


def explosion_flags(critic: CriticStep, actor: ActorStep | None, thresholds: Tensor) -> Tensor:
    """[over warning, over critical] for one update: its largest network gradient norm vs ``thresholds``.

    A network's norm is over all its parameters (cnn and mlp), before clipping. A NaN norm counts
    as over both (``NaN > threshold`` is False, and ``torch.maximum`` keeps the NaN).
    """
    norm = critic.grad_norms.norm()
    if actor is not None:
        norm = torch.maximum(norm, actor.grad_norms.norm())
    return ~(norm <= thresholds)


def alert_metrics(counts: Tensor) -> dict[str, Tensor]:
    """Cumulative counts of updates over the gradient-explosion thresholds."""
    return {"alerts/gradient_explosion_warning": counts[0], "alerts/gradient_explosion_critical": counts[1]}


def to_floats(metrics: dict[str, Tensor | float]) -> dict[str, float]:
    """Python floats for every metric, with a single device-to-host transfer for the tensors."""
    tensors = [value.detach().double() for value in metrics.values() if isinstance(value, Tensor)]
    read = iter(torch.stack(tensors).tolist() if tensors else [])
    return {name: next(read) if isinstance(value, Tensor) else float(value) for name, value in metrics.items()}
