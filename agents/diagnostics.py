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

# The agent-side metric names (DESIGN.md), declared here where they are produced; study.metrics
# adds the trial's own and imports these. Statistics of a tensor are named ``<prefix>_<stat>``.
STATS = ("mean", "max", "min", "std")
SPREAD = ("max", "min", "std")  # for Q on buffer actions, whose mean has a name of its own
CRITIC_LOSS, Q1_VALUE, Q2_VALUE = "train/critic_loss", "train/q1_value", "train/q2_value"
Q1, Q2, TARGET_Q, REWARD = "debug/q1", "debug/q2", "debug/target_q", "debug/reward"
TD_ERROR_Q1, TD_ERROR_Q2 = "debug/td_error_q1", "debug/td_error_q2"
DONE_RATIO, EFFECTIVE_DISCOUNT = "debug/done_ratio", "debug/effective_discount"
CRITIC_CNN_NORM, CRITIC_MLP_NORM = "gradients/critic_cnn_norm", "gradients/critic_mlp_norm"
ACTOR_LOSS, ACTOR_Q = "train/actor_loss", "debug/actor_q"  # ACTOR_Q: Q1(s, actor(s)), the value the actor climbs
ACTION_GAP, ACTOR_SATURATION = "debug/action_gap", "debug/actor_saturation"
ACTOR_CNN_NORM, ACTOR_MLP_NORM = "gradients/actor_cnn_norm", "gradients/actor_mlp_norm"
ALERT_WARNING, ALERT_CRITICAL = "alerts/gradient_explosion_warning", "alerts/gradient_explosion_critical"


def stat_names(prefix: str, stats: tuple[str, ...] = STATS) -> tuple[str, ...]:
    return tuple(f"{prefix}_{stat}" for stat in stats)


ACTOR_Q_MEAN, ACTOR_Q_MAX, ACTOR_Q_MIN, ACTOR_Q_STD = stat_names(ACTOR_Q)
CRITIC_KEYS: tuple[str, ...] = (
    CRITIC_LOSS, Q1_VALUE, Q2_VALUE, *stat_names(Q1, SPREAD), *stat_names(Q2, SPREAD), *stat_names(TARGET_Q),
    TD_ERROR_Q1, TD_ERROR_Q2, *stat_names(REWARD), DONE_RATIO, EFFECTIVE_DISCOUNT, CRITIC_CNN_NORM, CRITIC_MLP_NORM,
)  # fmt: skip
ACTOR_KEYS: tuple[str, ...] = (
    ACTOR_LOSS, *stat_names(ACTOR_Q), ACTION_GAP, ACTOR_SATURATION, ACTOR_CNN_NORM, ACTOR_MLP_NORM,
)  # fmt: skip
ALERT_KEYS: tuple[str, ...] = (ALERT_WARNING, ALERT_CRITICAL)
AGENT_KEYS: tuple[str, ...] = CRITIC_KEYS + ACTOR_KEYS + ALERT_KEYS


def _stats(prefix: str, x: Tensor, stats: tuple[str, ...] = STATS) -> dict[str, Tensor]:
    reductions: dict[str, Callable[[], Tensor]] = {"mean": x.mean, "max": x.max, "min": x.min, "std": x.std}
    return dict(zip(stat_names(prefix, stats), (reductions[stat]() for stat in stats)))


def critic_metrics(step: CriticStep, reward: Tensor, terminated: Tensor, gamma: float) -> dict[str, Tensor]:
    """Critic-side metrics of one update: Q on buffer actions, its target, TD errors, the batch's rewards.

    ``reward`` is the batch's raw reward (clipping, when on, acts inside the target only).
    """
    q1, q2 = step.q
    return {
        CRITIC_LOSS: step.loss,
        Q1_VALUE: q1.mean(),
        Q2_VALUE: q2.mean(),
        **_stats(Q1, q1, SPREAD),
        **_stats(Q2, q2, SPREAD),
        **_stats(TARGET_Q, step.target),
        TD_ERROR_Q1: (q1 - step.target).abs().mean(),
        TD_ERROR_Q2: (q2 - step.target).abs().mean(),
        **_stats(REWARD, reward),
        DONE_RATIO: terminated.mean(),
        EFFECTIVE_DISCOUNT: gamma * (1.0 - terminated).mean(),
        CRITIC_CNN_NORM: step.grad_norms[0],
        CRITIC_MLP_NORM: step.grad_norms[1],
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
        ACTOR_LOSS: step.loss,
        **_stats(ACTOR_Q, step.q),
        ACTION_GAP: gap,
        ACTOR_SATURATION: saturated,
        ACTOR_CNN_NORM: step.grad_norms[0],
        ACTOR_MLP_NORM: step.grad_norms[1],
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
    return {ALERT_WARNING: counts[0], ALERT_CRITICAL: counts[1]}


def to_floats(metrics: dict[str, Tensor | float]) -> dict[str, float]:
    """Python floats for every metric, with a single device-to-host transfer for the tensors."""
    tensors = [value.detach().double() for value in metrics.values() if isinstance(value, Tensor)]
    read = iter(torch.stack(tensors).tolist() if tensors else [])
    return {name: next(read) if isinstance(value, Tensor) else float(value) for name, value in metrics.items()}
