"""TD3 with actor-path Q diagnostics. Knows nothing of Ray, MLflow or CARLA.

    from agents import TD3, TD3Config
    agent = TD3(env.observation_space, env.action_space, TD3Config(tau=0.01), seed=0)
"""

from agents.agent import TD3
from agents.config import TD3Config

__all__ = ["TD3", "TD3Config"]
