"""CARLA: the client-side gymnasium env and the pool of CARLA servers a node's trials share.

    envs.carla.env      CarlaEnv, the driving task of envs.driving on a CARLA server
    envs.carla.config   CarlaConfig, its settings (importable without the carla client)
    envs.carla.pool     CarlaPool.lease(): one server slot per trial (ports, GPU, restarts)
    envs.carla.client   connecting, version checks, CarlaConnectionError

Nothing is imported here, so validating a config needs neither the client nor a server.
"""
