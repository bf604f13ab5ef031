"""Connecting to CARLA with the real client: closed ports, version checks, error classification."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import carla
import pytest

from envs.carla.client import CarlaConnectionError, CarlaVersionError, connect, is_connection_failure, version_problem
from tests.support.carla_standin import send_request

REPO = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    """A port nothing listens on (bound and released at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_standin(*flags: str) -> tuple[subprocess.Popen[bytes], int]:
    """A stand-in server on a free port, answering once it listens."""
    port = closed_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.support.carla_standin", f"-carla-rpc-port={port}", *flags],
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, port
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("stand-in server did not start")


@pytest.fixture
def standin() -> Iterator[int]:
    server, port = start_standin()
    yield port
    server.kill()
    server.wait()


def test_closed_port_is_one_clear_error_naming_carla_and_the_address():
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(CarlaConnectionError, match=rf"CARLA server at 127\.0\.0\.1:{port} did not answer within 0\.5 s"):
        connect("127.0.0.1", port, timeout_s=0.5)
    assert time.monotonic() - started < 5.0  # the timeout holds: a dead server does not hang a trial


def test_connect_checks_the_version_with_the_real_client(standin):
    client = connect("127.0.0.1", standin, timeout_s=2.0)
    assert client.get_server_version() == client.get_client_version() == "0.9.16"


def test_version_mismatch_says_both_versions_and_the_fix():
    server, port = start_standin("-standin-version=0.9.14")
    try:
        with pytest.raises(CarlaVersionError, match=r"runs version 0\.9\.14 .* client package is 0\.9\.16: install"):
            connect("127.0.0.1", port, timeout_s=2.0)
    finally:
        server.kill()
        server.wait()


def test_version_problem_is_none_only_for_equal_versions():
    assert version_problem("0.9.16", "0.9.16", "h:1") is None
    assert "h:1 runs version 0.9.15" in version_problem("0.9.16", "0.9.15", "h:1")


def test_timeouts_are_connection_failures_and_refused_requests_are_not(standin):
    client = carla.Client("127.0.0.1", standin, worker_threads=1)
    client.set_timeout(2.0)
    with pytest.raises(RuntimeError) as refused:
        client.get_world()  # the stand-in answers only `version`: a server-side error, not silence
    assert not is_connection_failure(refused.value)

    silent = carla.Client("127.0.0.1", closed_port(), worker_threads=1)
    silent.set_timeout(0.3)
    with pytest.raises(RuntimeError) as timed_out:
        silent.get_server_version()
    assert is_connection_failure(timed_out.value)


def test_a_hung_server_times_out_while_its_process_lives(standin):
    send_request(standin, "standin_hang", timeout_s=0.2)
    with pytest.raises(CarlaConnectionError, match="did not answer within 0.3 s"):
        connect("127.0.0.1", standin, timeout_s=0.3)
