"""Talking to a CARLA server: connect, check versions, and one error for a server that is gone.

The `carla` client reports every failure as a bare `RuntimeError` ("time-out of 2000ms while
waiting for the simulator ..."), indistinguishable from a refused spawn. Both the pool and the
env turn the connection failures into `CarlaConnectionError`, which names CARLA, the address
and the timeout, so a trial log says at once which server on which node went silent.

A `carla.Client` does not reconnect: after its server restarts, its calls keep timing out
(seen with the 0.9.16 client against a restarted stand-in server), so reconnecting means
building a new client.
"""

from __future__ import annotations

import carla

# Substrings of the client's RuntimeError messages that mean the server did not answer or the
# connection is gone (rpclib / asio wording), as opposed to a request the server refused.
_CONNECTION_FAILURES = ("time-out", "timeout", "connection", "end of file", "broken pipe", "closed")


class CarlaConnectionError(ConnectionError):
    """A CARLA server did not answer in time or the connection to it was lost."""

    def __init__(self, host: str, port: int, timeout_s: float, cause: str) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        super().__init__(
            f"CARLA server at {host}:{port} did not answer within {timeout_s:g} s ({cause}); "
            "check that the server is running and that host/port are right"
        )


class CarlaVersionError(RuntimeError):
    """Client and server versions differ: the RPC protocol is only stable within one version."""


def is_connection_failure(err: RuntimeError) -> bool:
    """True for the client's errors that mean "no answer / connection lost"."""
    message = str(err).lower()
    return any(marker in message for marker in _CONNECTION_FAILURES)


def version_problem(client_version: str, server_version: str, address: str) -> str | None:
    """Why a client and a server cannot work together, or None when their versions match."""
    if client_version == server_version:
        return None
    return (
        f"CARLA server at {address} runs version {server_version} but the carla client package is "
        f"{client_version}: install carla=={server_version} or run a {client_version} server"
    )


def connect(host: str, port: int, timeout_s: float, worker_threads: int = 0) -> carla.Client:
    """A new client to the server at host:port, after checking that it answers and its version matches.

    Every later call on the client times out after `timeout_s` too. The pool probes servers
    with this (one `version` call; `worker_threads=1` as the probe streams nothing).
    """
    client = carla.Client(host, port, worker_threads)
    client.set_timeout(timeout_s)
    try:
        server_version = client.get_server_version()
    except RuntimeError as err:
        raise CarlaConnectionError(host, port, timeout_s, str(err)) from err
    problem = version_problem(client.get_client_version(), server_version, f"{host}:{port}")
    if problem is not None:
        raise CarlaVersionError(problem)
    return client
