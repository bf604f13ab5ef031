"""What every driving backend shares: reward terms, termination, observation and action layout.

Pure functions only; a backend (envs.drive, envs.carla) measures a `DrivingStep` and builds its
observation, reward and termination from these, so both backends train the same task.
"""

from envs.driving.observation import (
    ACTION_SPACE,
    N_WAYPOINTS,
    action_to_controls,
    driving_observation_space,
    to_ego_frame,
    wrap_angle,
    vector_observation,
    vector_size,
)
from envs.driving.reward import REWARD_RANGE, TERM_NAMES, DrivingStep, RewardConfig, reward_terms, total_reward
from envs.driving.termination import (
    TERMINATION_REASONS,
    TIME_LIMIT,
    TerminationConfig,
    episode_end,
    next_stuck_steps,
    termination_reason,
)

__all__ = [
    "ACTION_SPACE",
    "N_WAYPOINTS",
    "REWARD_RANGE",
    "TERMINATION_REASONS",
    "TERM_NAMES",
    "TIME_LIMIT",
    "DrivingStep",
    "RewardConfig",
    "TerminationConfig",
    "action_to_controls",
    "driving_observation_space",
    "episode_end",
    "next_stuck_steps",
    "reward_terms",
    "termination_reason",
    "to_ego_frame",
    "wrap_angle",
    "total_reward",
    "vector_observation",
    "vector_size",
]
