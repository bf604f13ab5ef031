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
    population.save(path); population.load(path)    # a checkpoint of every member and the shared step

Each member is a whole ``agents.TD3``: its own seeded generators (warm-up and exploration actions,
minibatches, target smoothing noise), replay buffer, networks, counters, alerts and actor-path
diagnostics; acting, storing and sampling are the single agent's code, drawing from the member's
streams in the single agent's order. What the members share is the learning step
(``population_update``): ``agents.td3``'s functions for every member, one backward pass through all
their losses, one norm call for all their gradients, one fused optimizer step for all their
parameters and one fused soft update for all their targets. Adam is elementwise and keeps a step
count per parameter, and norms, clipping and weight decay stay per member, so that step is P Adams.

Why a member loop and not stacked parameters with ``torch.func.vmap`` (as LeanRL vmaps its twin
critics; a vmapped version of these functions was built and measured here, on CPU, one thread):
with 8 members, 256-256 networks and batch 256 it cost 5.8-6.0 ms of CPU per member-update against
6.0 for the single agent and 5.6 for this loop. MKL's batched products ran about 20% slower per
matrix than the single ones (8 members' activations no longer fit the 2 MiB L2), and they round the
width-1 products (each critic's output and its gradients) differently from the single ones, so a
vmapped member drifted from its single run: 4 members, 64-64, Pendulum-v1, critic parameters 1e-7
apart after 500 steps, 7e-3 after 1,000, 8e-2 after 2,000 (training amplifies the rounding). With
one member it was exact. The loop does each member's arithmetic as the single agent does, so every
member matches its single run exactly. On a GPU, where a step is bound by kernel launches rather
than arithmetic, the stacked form is the one to measure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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

POPULATION_FILE = "population.pt"  # in a population checkpoint: what the members share


def member_dir(path: str | Path, seed: int) -> Path:
    """Where a population checkpoint keeps the agent of the member of ``seed`` (``TD3.save``)."""
    return Path(path) / f"seed{seed}"


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


class TD3Population:
    """P TD3 agents of one config, one per seed, that act apart and learn in one step."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        cfg: TD3Config | None = None,
        seeds: Sequence[int] = (0,),
        device: str | torch.device = "auto",
    ) -> None:
        if not seeds:
            raise ValueError("a population needs at least one seed")
        self.cfg = cfg or TD3Config()
        # Each member is the single agent of its seed. Its own optimizers are never stepped (so
        # they hold no moments): the population's step its parameters. Never call a member's update.
        self.seeds = list(seeds)
        self.members = [TD3(observation_space, action_space, self.cfg, device, seed) for seed in seeds]
        self.active = list(range(len(self.members)))  # the members still learning
        self.optimizers = population_optimizers([m.nets for m in self.members], self.cfg)

    def update(self, diagnostics: bool = False) -> dict[int, dict[str, float]]:
        """One TD3 gradient step for every active member (``TD3.update``, together): {member: metrics}.

        A no-op while no update is due. Members act and observe in lockstep, so an update is due
        for all of them or for none.
        """
        members = [self.members[i] for i in self.active]
        if len({(member.env_steps, member.updates) for member in members}) > 1:
            raise RuntimeError("population members must act and observe in lockstep")
        due = [member.next_update() for member in members]
        if not due or due[0] is None:  # then none is due: members in lockstep are due together
            return {}
        batches = [d[0] for d in due if d is not None]
        critics, actors = population_update(
            batches,
            [member.smoothing_noise(batch) for member, batch in zip(members, batches, strict=True)],
            [member.nets for member in members],
            self.optimizers,
            self.cfg,
            update_actor=due[0][1],
        )
        return {
            i: member.record_update(batch, critics[k], None if actors is None else actors[k], diagnostics)
            for k, (i, member, batch) in enumerate(zip(self.active, members, batches, strict=True))
        }

    def freeze(self, member: int) -> None:
        """Stop ``member`` learning (the guard stopped it): no more updates, its parameters as they
        are. The others go on with the optimizer moments they had."""
        if member not in self.active:
            raise ValueError(f"member {member} is not learning (active: {self.active})")
        self.active.remove(member)
        if not self.active:  # nothing learns any more
            return
        before = self.optimizers
        self.optimizers = population_optimizers([self.members[i].nets for i in self.active], self.cfg)
        for old, new in ((before.actor, self.optimizers.actor), (before.critic, self.optimizers.critic)):
            for group in new.param_groups:
                for p in group["params"]:
                    new.state[p] = old.state[p]

    def save(self, path: str | Path, include_buffer: bool = False) -> None:
        """Write the population to the directory ``path``: each member's agent (``TD3.save``: networks,
        counters, generators, the buffer if asked) in its ``member_dir``, and in ``population.pt``
        what the members share: the fused optimizers' moments and which members still learn.

        A member's own ``agent.pt`` holds no moments (its optimizers are never stepped): it resumes
        as a member of its population, not as a single agent.
        """
        path = Path(path)
        for seed, member in zip(self.seeds, self.members, strict=True):
            member.save(member_dir(path, seed), include_buffer=include_buffer)
        shared = {
            "seeds": self.seeds,
            "active": self.active,
            "actor_optimizer": self.optimizers.actor.state_dict(),
            "critic_optimizer": self.optimizers.critic.state_dict(),
        }
        torch.save(shared, path / POPULATION_FILE)

    def load(self, path: str | Path) -> None:
        """Restore a population written by ``save`` into this new one (the same spaces, config and
        seeds): every member's agent, the members frozen then frozen again, and the shared optimizers
        over the members still learning, with their moments."""
        path = Path(path)
        shared = torch.load(path / POPULATION_FILE, map_location=self.members[0].device, weights_only=True)
        if shared["seeds"] != self.seeds:
            raise ValueError(f"{path} holds a population of seeds {shared['seeds']}, not {self.seeds}")
        if len(self.active) != len(self.members):
            raise ValueError("load into a new population: some of this one's members are frozen already")
        for seed, member in zip(self.seeds, self.members, strict=True):
            member.load(member_dir(path, seed))
        for i in sorted(set(range(len(self.members))) - set(shared["active"])):
            self.freeze(i)
        self.optimizers.actor.load_state_dict(shared["actor_optimizer"])
        self.optimizers.critic.load_state_dict(shared["critic_optimizer"])
