"""The CARLA pool against real processes: stand-in servers launched as CarlaUE4.sh would be.

Each test writes a `CarlaUE4.sh` that execs the stand-in server (tests/support/carla_standin.py),
so the pool runs its real launch, readiness (the real `carla.Client`), restart and kill paths.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from envs.carla.client import CarlaVersionError, connect
from envs.carla.pool import CarlaPool, CarlaPoolConfig, CarlaPoolError
from envs.carla.process import group_members
from tests.support.carla import free_base_port, standin_script
from tests.support.carla_standin import send_request

REPO = Path(__file__).resolve().parents[1]


def pool_config(tmp_path: Path, executable: str, slots: int = 1, **kw) -> CarlaPoolConfig:
    base = free_base_port(4 * slots + 1)
    settings = {
        "executable": executable,
        "slots": slots,
        "base_port": base,
        "tm_base_port": base + 3 * slots,
        "lock_dir": tmp_path / "locks",
        "probe_timeout_s": 1.0,  # generous: a busy CI machine must not make a healthy server look hung
        "poll_interval_s": 0.1,
        "startup_timeout_s": 30.0,
        "backoff_s": 0.05,
        "kill_grace_s": 1.0,
    }
    settings.update(kw)
    return CarlaPoolConfig(**settings)


def answers(host: str, port: int) -> bool:
    """The real client gets a matching version from host:port."""
    connect(host, port, timeout_s=2.0, worker_threads=1)
    return True


def living_descendants() -> set[int]:
    """Pids of this process's living descendants (other tests' helpers, e.g. Ray's, may be among them)."""
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


def test_lease_starts_a_server_that_answers_with_the_gpu_it_was_given(tmp_path):
    cfg = pool_config(tmp_path, standin_script(tmp_path))
    with CarlaPool(cfg).lease(gpu_index=1) as slot:
        assert (slot.host, slot.port, slot.tm_port) == ("127.0.0.1", cfg.base_port, cfg.tm_base_port)
        assert answers(slot.host, slot.port)
        assert "-graphicsadapter=1" in send_request(slot.port, "standin_args")


def test_eight_leases_from_separate_processes_get_distinct_ports(tmp_path):
    cfg = pool_config(tmp_path, standin_script(tmp_path), slots=8)
    done = tmp_path / "done"
    done.mkdir()
    # Each worker holds its lease until all eight hold one, so the eight leases overlap in time.
    worker = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from envs.carla.client import connect
        from envs.carla.pool import CarlaPool, CarlaPoolConfig
        cfg = CarlaPoolConfig.model_validate_json(sys.argv[1])
        done = Path({str(done)!r})
        with CarlaPool(cfg).lease() as slot:
            connect(slot.host, slot.port, 2.0, worker_threads=1)
            (done / sys.argv[2]).write_text(f"{{slot.port}} {{slot.tm_port}} {{slot.server_pid}}")
            deadline = time.monotonic() + 60
            while len(list(done.iterdir())) < 8 and time.monotonic() < deadline:
                time.sleep(0.1)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen([sys.executable, "-c", worker, cfg.model_dump_json(), str(i)], env=env) for i in range(8)
    ]
    assert [w.wait(timeout=120) for w in workers] == [0] * 8
    leases = [(done / str(i)).read_text().split() for i in range(8)]
    rpc_ports = {int(port) for port, _, _ in leases}
    tm_ports = {int(tm) for _, tm, _ in leases}
    assert rpc_ports == {cfg.base_port + 3 * i for i in range(8)}
    assert tm_ports == {cfg.tm_base_port + i for i in range(8)}
    assert all(group_members(int(pid)) == [] for _, _, pid in leases)  # each server went with its lease


def test_a_killed_server_is_restarted_and_answers_again(tmp_path):
    cfg = pool_config(tmp_path, standin_script(tmp_path, "-standin-children=1"))
    with CarlaPool(cfg).lease() as slot:
        first = slot.server_pid
        os.kill(first, signal.SIGKILL)
        slot.ensure_alive()
        assert slot.restarts == 1
        assert slot.server_pid != first
        assert answers(slot.host, slot.port)
        assert not group_members(first)  # the dead server's child went with it


def test_a_hung_server_is_detected_and_restarted(tmp_path):
    cfg = pool_config(tmp_path, standin_script(tmp_path))
    with CarlaPool(cfg).lease() as slot:
        hung = slot.server_pid
        send_request(slot.port, "standin_hang", timeout_s=0.2)
        assert psutil.pid_exists(hung)  # alive, only silent
        slot.ensure_alive()
        assert (slot.restarts, slot.server_pid != hung) == (1, True)
        assert answers(slot.host, slot.port)


def test_a_healthy_server_is_left_alone(tmp_path):
    cfg = pool_config(tmp_path, standin_script(tmp_path))
    with CarlaPool(cfg).lease() as slot:
        pid = slot.server_pid
        slot.ensure_alive()
        assert (slot.restarts, slot.server_pid) == (0, pid)


def test_restarts_are_bounded(tmp_path):
    crashing = tmp_path / "crash.sh"
    crashing.write_text("#!/bin/sh\nexit 3\n")
    crashing.chmod(0o755)
    cfg = pool_config(tmp_path, str(crashing), max_restarts=2)
    with pytest.raises(CarlaPoolError, match=r"exited with code 3 during startup; gave up after 2 restarts"):
        with CarlaPool(cfg).lease():
            pass


def test_version_mismatch_is_a_clear_error_and_leaves_no_process(tmp_path):
    cfg = pool_config(tmp_path, standin_script(tmp_path, "-standin-version=0.9.15"))
    before = living_descendants()
    with pytest.raises(CarlaVersionError, match=r"runs version 0\.9\.15 but the carla client package is 0\.9\.16"):
        with CarlaPool(cfg).lease():
            pass
    assert living_descendants() <= before


def test_release_leaves_no_process_even_one_that_ignores_sigterm(tmp_path):
    cfg = pool_config(tmp_path, standin_script(tmp_path, "-standin-children=2", "-standin-ignore-sigterm"),
                      kill_grace_s=0.3)
    before = living_descendants()
    with CarlaPool(cfg).lease() as slot:
        pgid = slot.server_pid
        assert len(group_members(pgid)) >= 3  # sh exec'd into the server, plus its two children
    assert group_members(pgid) == []
    assert living_descendants() <= before


def test_server_is_recycled_every_n_episodes(tmp_path):
    cfg = pool_config(tmp_path, standin_script(tmp_path), recycle_every_episodes=2)
    with CarlaPool(cfg).lease() as slot:
        first = slot.server_pid
        slot.episode_done()
        assert slot.server_pid == first
        slot.episode_done()
        assert (slot.server_pid != first, slot.restarts, slot.episodes) == (True, 0, 0)
        assert answers(slot.host, slot.port)


def test_server_is_recycled_past_its_memory_limit(tmp_path):
    cfg = pool_config(tmp_path, standin_script(tmp_path), memory_limit_mb=1.0)  # any python exceeds 1 MB
    with CarlaPool(cfg).lease() as slot:
        first = slot.server_pid
        slot.episode_done()
        assert slot.server_pid != first and slot.restarts == 0


def test_a_full_node_makes_the_next_lease_wait_then_fail_clearly(tmp_path):
    cfg = pool_config(tmp_path, standin_script(tmp_path), lease_timeout_s=0.5)
    with CarlaPool(cfg).lease():
        with pytest.raises(CarlaPoolError, match=r"no free CARLA slot .*\(slot 0: leased\)"):
            with CarlaPool(cfg).lease():
                pass


def test_a_port_used_outside_the_pool_skips_the_slot(tmp_path):
    cfg = pool_config(tmp_path, standin_script(tmp_path), slots=2)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", cfg.base_port + 1))  # slot 0's streaming port
        squatter.listen()
        with CarlaPool(cfg).lease() as slot:
            assert slot.index == 1 and answers(slot.host, slot.port)


def test_a_server_left_by_a_killed_trial_is_stopped_by_the_next_lease(tmp_path):
    cfg = pool_config(tmp_path, standin_script(tmp_path))
    ready = tmp_path / "ready"
    holder = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from envs.carla.pool import CarlaPool, CarlaPoolConfig
        with CarlaPool(CarlaPoolConfig.model_validate_json(sys.argv[1])).lease() as slot:
            Path({str(ready)!r}).write_text(str(slot.server_pid))
            time.sleep(600)
    """)
    trial = subprocess.Popen([sys.executable, "-c", holder, cfg.model_dump_json()],
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    orphan = int(ready.read_text())
    trial.kill()  # SIGKILL: the trial cannot stop its server, the kernel drops its locks
    trial.wait()
    assert group_members(orphan)
    with CarlaPool(cfg).lease() as slot:
        assert not group_members(orphan)
        assert slot.server_pid != orphan and answers(slot.host, slot.port)


def test_attach_mode_uses_running_servers_and_leaves_them_running(tmp_path):
    port = free_base_port(3)
    server = subprocess.Popen([sys.executable, "-m", "tests.support.carla_standin", f"-carla-rpc-port={port}"],
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        cfg = CarlaPoolConfig(mode="attach", servers=(f"127.0.0.1:{port}",), tm_base_port=free_base_port(1),
                              lock_dir=tmp_path / "locks", probe_timeout_s=1.0, poll_interval_s=0.1)
        with CarlaPool(cfg).lease() as slot:
            assert (slot.host, slot.port, slot.server_pid) == ("127.0.0.1", port, None)
            slot.ensure_alive()
            slot.episode_done()
        assert server.poll() is None and answers("127.0.0.1", port)
    finally:
        server.kill()
        server.wait()


def test_attach_mode_gives_up_on_a_dead_server(tmp_path):
    port = free_base_port(3)
    cfg = CarlaPoolConfig(mode="attach", servers=(f"127.0.0.1:{port}",), tm_base_port=free_base_port(1),
                          lock_dir=tmp_path / "locks", probe_timeout_s=0.2, poll_interval_s=0.1,
                          startup_timeout_s=0.5, max_restarts=1, backoff_s=0.05)
    with pytest.raises(CarlaPoolError, match=rf"127\.0\.0\.1:{port} did not answer within startup_timeout_s"):
        with CarlaPool(cfg).lease():
            pass
