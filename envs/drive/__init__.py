"""The embedded driving simulator: no server, no GPU. `import envs` registers it as `Drive-v0`.

    import envs, gymnasium
    env = gymnasium.make("Drive-v0", observation="vector", n_npcs=20)
"""

from envs.drive.config import DriveConfig
from envs.drive.env import DriveEnv

__all__ = ["DriveConfig", "DriveEnv"]
