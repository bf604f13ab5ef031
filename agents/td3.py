"""TD3's update as functions, to be read against the paper (Fujimoto et al. 2018, Algorithm 1).

    critic:  y = r + gamma * (1 - d) * min_i Q'_i(s', clip(pi'(s') + clip(eps, -c, c), -1, 1)),
             eps ~ N(0, sigma);  minimize sum_i mean (Q_i(s, a) - y)^2  (+ critic_l2 * sum w^2)
    actor:   every ``policy_delay`` critic steps, maximize mean Q1(s, pi(s))
    targets: after each actor step, theta' <- tau * theta + (1 - tau) * theta'

Nothing here synchronizes with the device: losses, Q values and gradient norms stay tensors, and
``agents.diagnostics`` reduces them only when the caller asks for metrics.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import gymnasium as gym
import torch
from torch import Tensor, nn

from agents.buffer import Batch
from agents.config import TD3Config
from agents.networks import Actor, Obs, TwinCritic, cnn_and_mlp_parameters

ParamGroups = tuple[list[nn.Parameter], list[nn.Parameter]]  # (cnn, mlp)


@dataclass
class TD3Networks:
    """The online actor and twin critic, their target copies, and the parameter lists updates use."""

    actor: Actor
    critic: TwinCritic
    actor_target: Actor
    critic_target: TwinCritic
    actor_groups: ParamGroups = field(init=False)  # (cnn, mlp), for gradient norms
    critic_groups: ParamGroups = field(init=False)
    online_params: list[Tensor] = field(init=False)  # actor then critic ...
    target_params: list[Tensor] = field(init=False)  # ... and their targets, in the same order

    def __post_init__(self) -> None:
        self.actor_groups = cnn_and_mlp_parameters(self.actor)
        self.critic_groups = cnn_and_mlp_parameters(self.critic)
        self.online_params = [*self.actor.parameters(), *self.critic.parameters()]
        self.target_params = [*self.actor_target.parameters(), *self.critic_target.parameters()]

    @classmethod
    def build(cls, observation_space: gym.Space, action_dim: int, cfg: TD3Config, device: torch.device) -> TD3Networks:
        """Fresh networks, initialized on the CPU from torch's global RNG (so the same seed gives the
        same weights on any device), then moved; targets start as exact copies."""
        actor = Actor(observation_space, action_dim, cfg.hidden_sizes, cfg.cnn_features).to(device)
        critic = TwinCritic(
            observation_space, action_dim, cfg.hidden_sizes, cfg.cnn_features, cfg.critic_layer_norm
        ).to(device)
        return cls(actor, critic, _frozen_copy(actor), _frozen_copy(critic))


M = TypeVar("M", bound=nn.Module)


def _frozen_copy(module: M) -> M:
    return copy.deepcopy(module).requires_grad_(False)


@dataclass
class TD3Optimizers:
    actor: torch.optim.Optimizer
    critic: torch.optim.Optimizer


def is_weight_matrix(p: Tensor) -> bool:
    """What the critic's regularizers act on: weight matrices and conv kernels, not biases or
    LayerNorm gains (1-D). A bias shifts Q uniformly, it does not steepen Q along the action, which
    is where the actor finds the values to climb; a gain pulled towards 0 rather than its initial 1
    would shrink the features a LayerNorm exists to keep at unit scale."""
    return p.ndim > 1


def critic_param_groups(
    params: Sequence[Tensor], matrices: Sequence[bool], weight_decay: float
) -> list[dict[str, object]]:
    """The critic's optimizer groups: weight matrices decayed, every other parameter not.

    ``matrices[i]`` is ``is_weight_matrix`` of the i-th parameter, judged on one network's shapes:
    a population's stacked tensors have a leading member dimension that ``ndim`` would count.
    """
    pairs = list(zip(params, matrices, strict=True))
    return [
        {"params": [p for p, matrix in pairs if matrix], "weight_decay": weight_decay},
        {"params": [p for p, matrix in pairs if not matrix], "weight_decay": 0.0},
    ]


def make_optimizers(nets: TD3Networks, cfg: TD3Config) -> TD3Optimizers:
    """One agent's optimizers (``optimizers_for`` its networks' parameters)."""
    critic = list(nets.critic.parameters())
    return optimizers_for(list(nets.actor.parameters()), critic, [is_weight_matrix(p) for p in critic], cfg)


def optimizers_for(
    actor: Sequence[Tensor], critic: Sequence[Tensor], critic_matrices: Sequence[bool], cfg: TD3Config
) -> TD3Optimizers:
    """Adam for the actor; for the critic Adam with coupled decay, or AdamW with decoupled decay,
    both on the weights ``critic_l2`` penalizes (``critic_matrices``, see ``is_weight_matrix``).

    Coupled (Adam's ``weight_decay``): g <- g + wd * w enters the moment estimates, so the decay is
    rescaled by Adam's adaptive step. Without clipping that is the update of the L2 penalty
    (wd / 2) * sum w^2 (``critic_l2 = wd / 2``); when clipping binds they differ, because the
    penalty's gradient is clipped with the TD gradient and the decay joins after clipping.
    Decoupled (AdamW): w <- w * (1 - lr * wd), independent of the gradient's scale.
    Fused kernels: one call updates every parameter (the fastest CPU and CUDA path). Every step is
    elementwise, so these optimizers over a population's stacked tensors are one Adam per member.
    """
    critic_cls = torch.optim.Adam if cfg.weight_decay_mode == "coupled" else torch.optim.AdamW
    groups = critic_param_groups(critic, critic_matrices, cfg.critic_weight_decay)
    return TD3Optimizers(
        actor=torch.optim.Adam(actor, lr=cfg.lr_actor, fused=True),
        critic=critic_cls(groups, lr=cfg.lr_critic, fused=True),
    )


def regroup_critic_optimizer_state(saved: dict, critic: nn.Module) -> dict:
    """A critic optimizer state saved with one group (before the decay spared biases) in the
    groups of ``critic_param_groups``: each parameter keeps its moments, under its new index."""
    if len(saved["param_groups"]) != 1:
        return saved
    params = list(critic.parameters())
    order = [i for i, p in enumerate(params) if is_weight_matrix(p)] + [i for i, p in enumerate(params) if not is_weight_matrix(p)]
    new_index = {old: new for new, old in enumerate(order)}
    (group,) = saved["param_groups"]
    n_matrices = sum(is_weight_matrix(p) for p in params)
    groups = [
        {**group, "params": list(range(n_matrices))},
        {**group, "params": list(range(n_matrices, len(params))), "weight_decay": 0.0},
    ]
    return {"state": {new_index[int(i)]: s for i, s in saved["state"].items()}, "param_groups": groups}


@dataclass(frozen=True)
class CriticStep:
    """What one critic step saw: Q on the buffer's actions, its regression target, gradient norms."""

    loss: Tensor  # the minimized loss, L2 penalty included
    q: Tensor  # [2, B] Q1, Q2 on (s, a) from the buffer
    target: Tensor  # [B] y
    grad_norms: Tensor  # [2] (cnn, mlp), before clipping


@dataclass(frozen=True)
class ActorStep:
    """What one actor step saw: the actor-path Q it climbed, on which actions, gradient norms."""

    loss: Tensor
    q: Tensor  # [B] Q1(s, pi(s)): the value the actor climbs
    action: Tensor  # [B, A] pi(s)
    buffer_action: Tensor  # [B, A] the buffer's actions for the same states
    grad_norms: Tensor  # [2] (cnn, mlp), before clipping


def smoothing_noise(batch: Batch, cfg: TD3Config, generator: torch.Generator) -> Tensor | None:
    """Standard normal draws for target policy smoothing, one per action component of the batch;
    None when smoothing is off (nothing is drawn). Apart from the target so that a population
    draws each member's from that member's own generator, in the single agent's order."""
    if not cfg.target_policy_smoothing:
        return None
    return torch.randn(batch.action.shape, generator=generator, device=batch.action.device)


@torch.no_grad()
def td3_target(
    batch: Batch, actor_target: Actor, critic_target: TwinCritic, cfg: TD3Config, noise: Tensor | None
) -> Tensor:
    """y = r + gamma (1 - d) Q'(s', a'), with TD3's two switches and optional reward clipping.

    ``target_policy_smoothing``: a' = clip(pi'(s') + clip(eps, -c, c), -1, 1) with
    eps = policy_noise * ``noise`` (``smoothing_noise``), else a' = pi'(s').
    ``clipped_double_q``: Q' = min(Q1', Q2'), else Q1' alone.
    ``reward_clip``: r clipped to [-c, c] here only; the buffer and the logs keep raw rewards.
    """
    next_action = actor_target(batch.next_obs)
    if noise is not None:
        eps = noise * cfg.policy_noise
        next_action = (next_action + eps.clamp(-cfg.noise_clip, cfg.noise_clip)).clamp(-1.0, 1.0)
    next_q = critic_target(batch.next_obs, next_action)  # [2, B]
    next_value = next_q.min(dim=0).values if cfg.clipped_double_q else next_q[0]
    reward = batch.reward if cfg.reward_clip is None else batch.reward.clamp(-cfg.reward_clip, cfg.reward_clip)
    return reward + cfg.gamma * (1.0 - batch.terminated) * next_value


def critic_loss(critic: TwinCritic, batch: Batch, target: Tensor, cfg: TD3Config) -> tuple[Tensor, Tensor]:
    """MSE(Q1, y) + MSE(Q2, y) on the buffer's (s, a), plus the L2 penalty when on; and Q [2, B]."""
    q = critic(batch.obs, batch.action)  # [2, B]
    loss = (q - target).pow(2).mean(dim=1).sum()
    if cfg.critic_l2 > 0.0:
        loss = loss + critic_l2_penalty(critic, cfg.critic_l2)
    return loss, q


def actor_loss(actor: Actor, critic: TwinCritic, obs: Obs) -> tuple[Tensor, Tensor, Tensor]:
    """-mean Q1(s, pi(s)), the deterministic policy gradient's loss; and Q1(s, pi(s)) [B], pi(s) [B, A]."""
    action = actor(obs)
    q = critic.q1(obs, action)
    return -q.mean(), q, action


def critic_l2_penalty(critic: nn.Module, coeff: float) -> Tensor:
    """coeff * sum(w**2) over the critic's weight matrices and conv kernels (``is_weight_matrix``),
    the parameters the optimizer's weight decay acts on too."""
    return coeff * torch.stack([(w * w).sum() for w in critic.parameters() if is_weight_matrix(w)]).sum()


def backward_and_clip(
    loss: Tensor, optimizer: torch.optim.Optimizer, groups: ParamGroups, max_norm: float | None
) -> Tensor:
    """Gradients of ``loss`` for the groups' parameters only; clipped; (cnn, mlp) norms before clipping.

    Only these parameters: in the actor step the loss flows through the critic, and autograd then
    computes dQ/da through it without the critic's weight gradients (one matrix product in three).
    """
    return backward_and_clip_members([loss], optimizer, [groups], max_norm)[0]


def backward_and_clip_members(
    losses: Sequence[Tensor], optimizer: torch.optim.Optimizer, groups: Sequence[ParamGroups], max_norm: float | None
) -> list[Tensor]:
    """``backward_and_clip`` for independent networks at once (a population's members, each loss
    with its network's groups): one backward pass through every loss and one norm call for every
    gradient, then each network's (cnn, mlp) norms and its clipping by its own total norm, in the
    same operations as for a network alone."""
    optimizer.zero_grad(set_to_none=True)
    params = [[*cnn, *mlp] for cnn, mlp in groups]
    torch.autograd.backward(list(losses), inputs=[p for own in params for p in own])
    grads = [p.grad for own in params for p in own if p.grad is not None]  # all: every parameter feeds its loss
    per_tensor = iter(torch._foreach_norm(grads))
    norms = []
    for (cnn, _), own in zip(groups, params, strict=True):
        own_norms = torch.stack([next(per_tensor) for _ in own])
        network_norms = torch.stack([own_norms[: len(cnn)].norm(), own_norms[len(cnn) :].norm()])  # empty -> 0
        if max_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(own, max_norm, network_norms.norm())
        norms.append(network_norms)
    return norms


@torch.no_grad()
def soft_update_(target: list[Tensor], online: list[Tensor], tau: float) -> None:
    """theta' <- theta' + tau (theta - theta') = tau theta + (1 - tau) theta', in one fused call."""
    torch._foreach_lerp_(target, online, tau)


def td3_update(
    batch: Batch,
    nets: TD3Networks,
    optimizers: TD3Optimizers,
    cfg: TD3Config,
    generator: torch.Generator,
    update_actor: bool,
) -> tuple[CriticStep, ActorStep | None]:
    """One TD3 gradient step on ``batch``: the critic always; the actor and targets if ``update_actor``."""
    # Critic: regress both Q_i(s, a) on the shared target y.
    target = td3_target(batch, nets.actor_target, nets.critic_target, cfg, smoothing_noise(batch, cfg, generator))
    loss, q = critic_loss(nets.critic, batch, target, cfg)
    critic_norms = backward_and_clip(loss, optimizers.critic, nets.critic_groups, cfg.grad_clip_norm)
    optimizers.critic.step()
    critic = CriticStep(loss=loss.detach(), q=q.detach(), target=target, grad_norms=critic_norms)
    if not update_actor:
        return critic, None

    # Actor (delayed): deterministic policy gradient through Q1 alone.
    loss, actor_q, action = actor_loss(nets.actor, nets.critic, batch.obs)
    actor_norms = backward_and_clip(loss, optimizers.actor, nets.actor_groups, cfg.grad_clip_norm)
    optimizers.actor.step()

    # Targets follow the online networks slowly, at the actor's pace.
    soft_update_(nets.target_params, nets.online_params, cfg.tau)
    actor = ActorStep(
        loss=loss.detach(),
        q=actor_q.detach(),
        action=action.detach(),
        buffer_action=batch.action,
        grad_norms=actor_norms,
    )
    return critic, actor
