"""The embedded driving simulator: no server, no GPU. Importing this registers `Drive-v0`.

    import envs.drive, gymnasium
    env = gymnasium.make("Drive-v0", observation="vector", n_npcs=20)
"""

import gymnasium

from envs.drive.config import DriveConfig
from envs.drive.env import DriveEnv

ENV_ID = "Drive-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="envs.drive.env:DriveEnv")

__all__ = ["ENV_ID", "DriveConfig", "DriveEnv"]
