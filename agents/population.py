"""A population: P TD3 agents of one config (an arm's seeds) learning in one process, each member's
run bit for bit the one it would have alone.

    population = TD3Population(env.observation_space, env.action_space, TD3Config(), seeds=[0, 1, 2])
    for i in population.active:                      # each member acts, steps its own env, stores ...
        member = population.members[i]
        action = member.act(obs[i])
        next_obs, reward, terminated, truncated, _ = envs[i].step(action)
        member.observe(obs[i], action, reward, next_obs, terminated)
    metrics = population.update(diagnostics=True)    # ... and all learn in one step: {member: metrics}
    population.freeze(i)                             # the guard stopped member i: it learns no more

Each member is a whole ``agents.TD3``: its own seeded generators (warm-up and exploration actions,
minibatches, target smoothing noise), replay buffer, networks, counters, alerts and actor-path
diagnostics; acting, storing and sampling are the single agent's code, drawing from the member's
streams in the single agent's order. What the members share is the learning step
(``population_update``): ``agents.td3``'s functions for every member, one backward pass through all
their losses, one norm call for all their gradients, one fused optimizer step for all their
parameters and one fused soft update for all their targets. Adam is elementwise and keeps a step
count per parameter, and norms, clipping and weight decay stay per member, so that step is P Adams.

Why a member loop and not stacked parameters with ``torch.func.vmap`` (as LeanRL vmaps its twin
critics): measured here on CPU (one thread, 256-256 networks, batch 256, 8 members), a vmapped
update cost 5.8-6.0 ms of CPU per member against 6.0 for the single agent and 5.6 for this loop:
MKL's batched products ran about 20% slower per matrix than the single ones (the members'
activations no longer fit the 2 MiB L2), and they round the width-1 products (each critic's output)
differently, so a vmapped member drifted from its single run (critic parameters 1e-7 apart after 300
steps, 7e-3 after 1,000, 8e-2 after 2,000: training amplifies the rounding). The loop does each
member's arithmetic exactly as the single agent does, so members match their single runs exactly.

``threads`` > 1 splits the members into that many shards that learn in parallel threads (PyTorch's
kernels release the GIL): a population can then use several cores without intra-op threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from torch import Tensor

from agents.agent import TD3
from agents.buffer import Batch
from agents.config import TD3Config
from agents.td3 import (
    ActorStep,
    CriticStep,
    TD3Networks,
    TD3Optimizers,
    actor_loss,
    backward_and_clip_members,
    critic_loss,
    is_weight_matrix,
    optimizers_for,
    soft_update_,
    td3_target,
)


def population_optimizers(nets: Sequence[TD3Networks], cfg: TD3Config) -> TD3Optimizers:
    """The single agent's optimizers (``td3.optimizers_for``) over every member's parameters: one
    fused step updates them all, each tensor with its own moments and step count."""
    actor = [p for n in nets for p in n.actor.parameters()]
    critic = [p for n in nets for p in n.critic.parameters()]
    return optimizers_for(actor, critic, [is_weight_matrix(p) for p in critic], cfg)


def population_update(
    batches: Sequence[Batch],
    noises: Sequence[Tensor | None],
    nets: Sequence[TD3Networks],
    optimizers: TD3Optimizers,
    cfg: TD3Config,
    update_actor: bool,
) -> tuple[list[CriticStep], list[ActorStep] | None]:
    """``td3.td3_update`` for every member at once (a batch, smoothing noise and networks each),
    step for step, with ``population_optimizers`` over the members' networks."""
    # Critic: each member regresses both its Q_i(s, a) on its own target y.
    targets = [
        td3_target(b, n.actor_target, n.critic_target, cfg, noise) for b, n, noise in zip(batches, nets, noises, strict=True)
    ]
    losses, qs = zip(*(critic_loss(n.critic, b, y, cfg) for b, n, y in zip(batches, nets, targets, strict=True)), strict=True)
    critic_groups = [n.critic_groups for n in nets]
    critic_norms = backward_and_clip_members(losses, optimizers.critic, critic_groups, cfg.grad_clip_norm)
    optimizers.critic.step()
    critics = [
        CriticStep(loss=loss.detach(), q=q.detach(), target=y, grad_norms=norms)
        for loss, q, y, norms in zip(losses, qs, targets, critic_norms, strict=True)
    ]
    if not update_actor:
        return critics, None

    # Actor (delayed): deterministic policy gradient through Q1 alone.
    steps = [actor_loss(n.actor, n.critic, b.obs) for b, n in zip(batches, nets, strict=True)]
    actor_groups = [n.actor_groups for n in nets]
    actor_norms = backward_and_clip_members([s[0] for s in steps], optimizers.actor, actor_groups, cfg.grad_clip_norm)
    optimizers.actor.step()

    # Targets follow the online networks slowly, at the actor's pace.
    soft_update_([p for n in nets for p in n.target_params], [p for n in nets for p in n.online_params], cfg.tau)
    actors = [
        ActorStep(loss=loss.detach(), q=q.detach(), action=action.detach(), buffer_action=b.action, grad_norms=norms)
        for (loss, q, action), b, norms in zip(steps, batches, actor_norms, strict=True)
    ]
    return critics, actors


@dataclass
class _Shard:
    """Members that learn together, in one thread: one fused optimizer step for all of them."""

    members: list[int]
    optimizers: TD3Optimizers


class TD3Population:
    """P TD3 agents of one config, one per seed, that act apart and learn in one step."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        cfg: TD3Config | None = None,
        seeds: Sequence[int] = (0,),
        device: str | torch.device = "auto",
        threads: int = 1,
    ) -> None:
        if not seeds:
            raise ValueError("a population needs at least one seed")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.cfg = cfg or TD3Config()
        # Each member is the single agent of its seed. Its own optimizers are never stepped (so
        # they hold no moments): the population's step its parameters. Never call a member's update.
        self.members = [TD3(observation_space, action_space, self.cfg, device, seed) for seed in seeds]
        self.active = list(range(len(self.members)))  # the members still learning
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="population") if threads > 1 else None
        self._shards = self._shard({})

    def _shard(self, moments: dict[Tensor, dict[str, Any]]) -> list[_Shard]:
        """The active members dealt round-robin into ``threads`` shards (fewer when fewer members
        are left), each with optimizers over its members' parameters, carrying the ``moments``
        (optimizer state by parameter) that parameters already had."""
        shards = []
        for k in range(min(self.threads, len(self.active))):
            members = self.active[k :: self.threads]
            optimizers = population_optimizers([self.members[i].nets for i in members], self.cfg)
            for optimizer in (optimizers.actor, optimizers.critic):
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        if p in moments:
                            optimizer.state[p] = moments[p]
            shards.append(_Shard(members, optimizers))
        return shards

    def update(self, diagnostics: bool = False) -> dict[int, dict[str, float]]:
        """One TD3 gradient step for every active member (``TD3.update``, together): {member: metrics}.

        A no-op while no update is due. Members act and observe in lockstep, so an update is due
        for all of them or for none.
        """
        if not self.active:
            return {}
        if len({(self.members[i].env_steps, self.members[i].updates) for i in self.active}) > 1:
            raise RuntimeError("population members must act and observe in lockstep")
        due = {i: self.members[i].next_update() for i in self.active}
        first = due[self.active[0]]
        if first is None:  # then none is due: members in lockstep are due together
            return {}
        batches = {i: d[0] for i, d in due.items() if d is not None}
        update_actor = first[1]

        def learn(shard: _Shard) -> tuple[list[CriticStep], list[ActorStep] | None]:
            members = shard.members
            return population_update(
                [batches[i] for i in members],
                [self.members[i].smoothing_noise(batches[i]) for i in members],
                [self.members[i].nets for i in members],
                shard.optimizers,
                self.cfg,
                update_actor,
            )

        steps = list(self._pool.map(learn, self._shards)) if self._pool else [learn(s) for s in self._shards]
        metrics = {}
        for shard, (critics, actors) in zip(self._shards, steps, strict=True):
            for k, i in enumerate(shard.members):
                actor = None if actors is None else actors[k]
                metrics[i] = self.members[i].record_update(batches[i], critics[k], actor, diagnostics)
        return metrics

    def freeze(self, member: int) -> None:
        """Stop ``member`` learning (the guard stopped it): no more updates, its parameters as they
        are. The others go on with the optimizer moments they had."""
        if member not in self.active:
            raise ValueError(f"member {member} is not learning (active: {self.active})")
        moments = {p: s for shard in self._shards for o in (shard.optimizers.actor, shard.optimizers.critic) for p, s in o.state.items()}
        self.active.remove(member)
        self._shards = self._shard(moments)
