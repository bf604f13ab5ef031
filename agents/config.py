"""TD3's hyperparameters: one validated config, the names the study files and the CLI use.

Defaults are the TD3 paper's (Fujimoto et al. 2018): Adam 3e-4 for both networks, 256-256,
tau 0.005, target policy noise 0.2 clipped at 0.5, policy delay 2, exploration noise 0.1,
batch 256, gamma 0.99, no weight decay and no L2. The 0.01 critic L2 people quote comes from the
DDPG paper; here it is one study arm, not a default.

Noises are in the normalized action space [-1, 1] (the agent rescales to the env's bounds), so
``exploration_noise=0.1`` means 10% of the half-range on every env, as in the paper.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationInfo, field_validator


class TD3Config(BaseModel):
    """Everything that defines a TD3 agent's learning; frozen, because the networks are built from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gamma: float = Field(default=0.99, ge=0.0, lt=1.0, description="discount, in [0, 1)")
    tau: float = Field(default=0.005, gt=0.0, le=1.0, description="soft target update rate, in (0, 1]; 1 copies")
    lr_actor: float = Field(default=3e-4, gt=0.0)
    lr_critic: float = Field(default=3e-4, gt=0.0)
    batch_size: PositiveInt = 256
    buffer_size: PositiveInt = 1_000_000
    learning_starts: int = Field(
        default=1_000,
        ge=0,
        description="env steps of uniform random actions before the actor acts and updates start; "
        "1,000 lets the defaults solve Pendulum-v1 well within 15k steps",
    )
    exploration_noise: float = Field(default=0.1, ge=0.0, description="std of the Gaussian action noise")
    policy_noise: float = Field(default=0.2, ge=0.0, description="std of the target policy smoothing noise")
    noise_clip: float = Field(default=0.5, ge=0.0, description="the smoothing noise is clipped to +-noise_clip")
    policy_delay: PositiveInt = Field(default=2, description="critic updates per actor and target update")
    hidden_sizes: tuple[PositiveInt, ...] = Field(default=(256, 256), min_length=1)
    grad_clip_norm: float | None = Field(
        default=None, gt=0.0, description="clip each network's total gradient norm to this; null = off"
    )
    critic_l2: float = Field(
        default=0.0,
        ge=0.0,
        description="explicit penalty critic_l2 * sum(w**2) over critic weight matrices and kernels "
        "(not biases, not LayerNorm gains), added to the critic loss; it enters the gradient that "
        "clipping sees. Without clipping it is the same update as coupled critic_weight_decay = "
        "2 * critic_l2; when clipping binds it is not (the decay joins after clipping)",
    )
    critic_weight_decay: float = Field(
        default=0.0,
        ge=0.0,
        description="optimizer weight decay on the critic's weight matrices and kernels (not biases, "
        "not LayerNorm gains: the parameters critic_l2 penalizes)",
    )
    weight_decay_mode: Literal["coupled", "decoupled"] = Field(
        default="coupled",
        description="coupled: Adam(weight_decay), the decay joins the gradient and is rescaled by "
        "Adam's adaptive step; decoupled: AdamW, the decay shrinks weights by lr * decay directly",
    )
    critic_layer_norm: bool = Field(
        default=False,
        description="nn.LayerNorm (elementwise affine) after each hidden linear layer of both critics, "
        "before the ReLU, and so of their targets (copies); the actor has none. Off: TD3 as published",
    )
    reward_clip: float | None = Field(
        default=None, gt=0.0, description="clip rewards to [-c, c] inside the update only; null = off"
    )
    clipped_double_q: bool = Field(default=True, description="target uses min(Q1', Q2'); off: Q1' alone")
    target_policy_smoothing: bool = Field(default=True, description="noise on the target action; off: none")
    cnn_features: PositiveInt = Field(default=256, description="size of the image encoder's output (Dict obs)")
    grad_norm_warning: float = Field(
        default=1_000.0, gt=0.0, description="a network's gradient norm above this counts as a warning alert"
    )
    grad_norm_critical: float = Field(
        default=10_000.0, gt=0.0, description="a network's gradient norm above this counts as a critical alert"
    )

    # Field validators (not a model validator) so that the error's location is the field a user
    # would change; the field each is compared with is declared, and so validated, before it.
    @field_validator("buffer_size")
    @classmethod
    def _holds_a_batch(cls, buffer_size: int, info: ValidationInfo) -> int:
        batch_size = info.data.get("batch_size")
        if batch_size is not None and buffer_size < batch_size:
            raise ValueError(f"batch_size ({batch_size}) must be <= buffer_size ({buffer_size})")
        return buffer_size

    @field_validator("grad_norm_critical")
    @classmethod
    def _above_warning(cls, critical: float, info: ValidationInfo) -> float:
        warning = info.data.get("grad_norm_warning")
        if warning is not None and critical <= warning:
            raise ValueError(f"grad_norm_critical ({critical}) must be > grad_norm_warning ({warning})")
        return critical
