"""A pool of CARLA servers on one node: one slot per trial, with its own ports, server and GPU.

Contract with the Ray trainable (study/trainable.py)::

    pool = CarlaPool(CarlaPoolConfig(executable="/opt/carla/CarlaUE4.sh", slots=4))
    with pool.lease(gpu_index) as slot:   # blocks for a free slot (lease_timeout_s, then CarlaPoolError)
        env = CarlaEnv(host=slot.host, port=slot.port, tm_port=slot.tm_port)
        ...                               # an episode
        slot.episode_done()               # counts episodes; recycles the server when due
        slot.ensure_alive()               # between episodes: restarts a dead or hung server
    # on leaving the block the server's whole process group is gone and the slot is free

The env reconnects by itself on its next reset after a restart or recycle (a new server
invalidates its client; see envs.carla.client).

How it holds together:

- A slot is taken by locking one file per port it owns (RPC P, streaming P+1, secondary P+2,
  traffic manager) under `lock_dir` with `flock`. The kernel drops the locks when the holder
  exits, even on SIGKILL, so a crashed trial never leaves a slot taken, and two trials on one
  node, in any processes, never share a port, even under different configs.
- Launch mode starts `CarlaUE4.sh` (or a docker image) as the leader of its own process group,
  skipping slots whose ports something outside the pool already listens on. Attach mode uses
  servers that are already running (`servers`), one per slot, and never stops them.
- Ready means: the real `carla.Client` gets the server's version within `probe_timeout_s`,
  and it equals the client's (CarlaVersionError otherwise, not retried: a restart cannot fix it).
- A server that exited or stopped answering is restarted after a backoff
  (`backoff_s * 2**(k-1)`), at most `max_restarts` times per lease, then CarlaPoolError.
- Recycling (every `recycle_every_episodes`, or past `memory_limit_mb` of resident memory in
  its process group) restarts a healthy server between episodes; it is not a failure.
- Release ends the server's process group: SIGTERM, then SIGKILL after `kill_grace_s`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from envs.carla.client import CarlaConnectionError, connect
from envs.carla.pool_config import (
    CarlaPoolConfig,
    PortBlock,
    container_id_file,
    launch_command,
    port_block,
    recycle_reason,
    restart_delay,
    slot_host,
)
from envs.carla.process import group_rss_mb, kill_group, reap_recorded_group, record_group, start_group

__all__ = ["CarlaPool", "CarlaPoolConfig", "CarlaPoolError", "CarlaSlot"]

log = logging.getLogger(__name__)


class CarlaPoolError(RuntimeError):
    """No slot could be leased, or a slot's server could not be kept running."""


class _StartFailed(Exception):
    """A server did not come up; the message says how (exit code or silence)."""


class CarlaSlot:
    """One leased CARLA server: where it is, and the means to keep it answering."""

    def __init__(self, cfg: CarlaPoolConfig, index: int, gpu_index: int | None) -> None:
        self.cfg = cfg
        self.index = index
        self.gpu_index = gpu_index
        self.block: PortBlock = port_block(cfg, index)
        self.host = slot_host(cfg, index)
        self.restarts = 0  # failed starts and restarts so far in this lease
        self.episodes = 0  # since the server last started
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self.block.rpc

    @property
    def tm_port(self) -> int:
        return self.block.tm

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def server_pid(self) -> int | None:
        """Pid (and process group id) of the server this slot launched; None in attach mode."""
        return None if self._process is None else self._process.pid

    def ensure_alive(self) -> None:
        """Return once the server answers: at once if it does, else after restarting it (bounded)."""
        problem = self._health_problem()
        if problem is not None:
            log.warning("CARLA server at %s %s; restarting it", self.address, problem)
            self._recover(problem)

    def episode_done(self) -> None:
        """Count an episode; restart a healthy server whose recycling is due (between episodes)."""
        self.episodes += 1
        if self._process is None:
            return
        rss_mb = group_rss_mb(self._process.pid) if self.cfg.memory_limit_mb is not None else None
        reason = recycle_reason(self.episodes, rss_mb, self.cfg)
        if reason is None:
            return
        log.info("recycling CARLA server at %s: %s", self.address, reason)
        self._stop_server()
        self._start()

    def _start(self) -> None:
        try:
            self._start_server()
        except _StartFailed as err:
            self._recover(str(err))

    def _recover(self, problem: str) -> None:
        """Restart the server until it answers, or give up after max_restarts with CarlaPoolError."""
        while self.restarts < self.cfg.max_restarts:
            self.restarts += 1
            self._stop_server()
            time.sleep(restart_delay(self.restarts, self.cfg.backoff_s, self.cfg.backoff_max_s))
            try:
                self._start_server()
                return
            except _StartFailed as err:
                problem = str(err)
        self._stop_server()
        raise CarlaPoolError(
            f"CARLA server at {self.address} {problem}; gave up after {self.restarts} restarts "
            f"(max_restarts={self.cfg.max_restarts}){self._log_hint()}"
        )

    def _start_server(self) -> None:
        """Launch the server (launch mode) and wait until it answers with our version."""
        if self.cfg.mode == "launch":
            argv = launch_command(self.cfg, self.block, self.gpu_index)
            if self.cfg.docker_image is not None:
                container_id_file(self.cfg, self.block).unlink(missing_ok=True)  # docker refuses to overwrite it
            self._process = start_group(argv, self._log_path())
            record_group(_record_path(self.cfg, self.block), self._process.pid)
            log.info("started CARLA server at %s (pid %d): %s", self.address, self._process.pid, " ".join(argv))
        self.episodes = 0
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        while True:
            exited = self._exit_problem()
            if exited is not None:
                raise _StartFailed(f"{exited} during startup")
            try:
                connect(self.host, self.port, self.cfg.probe_timeout_s, worker_threads=1)
                return
            except CarlaConnectionError:
                if time.monotonic() > deadline:
                    raise _StartFailed(f"did not answer within startup_timeout_s={self.cfg.startup_timeout_s:g}") from None
            time.sleep(self.cfg.poll_interval_s)

    def _health_problem(self) -> str | None:
        exited = self._exit_problem()
        if exited is not None:
            return exited
        try:
            connect(self.host, self.port, self.cfg.probe_timeout_s, worker_threads=1)
        except CarlaConnectionError:
            return f"did not answer within probe_timeout_s={self.cfg.probe_timeout_s:g}"
        return None

    def _exit_problem(self) -> str | None:
        if self._process is None or self._process.poll() is None:
            return None
        return f"exited with code {self._process.returncode}"

    def _stop_server(self) -> None:
        """End the server's process group (launch mode); nothing of it is left afterwards."""
        if self._process is None:
            return
        kill_group(self._process.pid, self.cfg.kill_grace_s)
        self._process.wait()
        self._process = None
        if self.cfg.docker_image is not None:
            _kill_container(container_id_file(self.cfg, self.block))
        _record_path(self.cfg, self.block).unlink(missing_ok=True)

    def _log_path(self) -> Path | None:
        return None if self.cfg.log_dir is None else self.cfg.log_dir / f"carla-{self.port}.log"

    def _log_hint(self) -> str:
        path = self._log_path()
        return "" if path is None else f"; server output in {path}"


class CarlaPool:
    """Leases CARLA slots on this node (see the module docstring)."""

    def __init__(self, cfg: CarlaPoolConfig) -> None:
        self.cfg = cfg

    @contextlib.contextmanager
    def lease(self, gpu_index: int | None = None) -> Iterator[CarlaSlot]:
        """A slot with a server that answers, held until the block ends; then its server is stopped."""
        index, locks = self._acquire()
        slot = CarlaSlot(self.cfg, index, gpu_index)
        try:
            slot._start()
            yield slot
        finally:
            try:
                slot._stop_server()
            finally:
                for fd in locks:
                    os.close(fd)  # closing drops the flock

    def _acquire(self) -> tuple[int, list[int]]:
        """Lock a free slot's port files, waiting up to lease_timeout_s; returns (slot, lock fds)."""
        self.cfg.lock_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.cfg.lease_timeout_s
        while True:
            busy: list[str] = []
            for index in range(self.cfg.n_slots):
                locks = _lock_all(self.cfg.lock_dir, _lock_names(self.cfg, index))
                if locks is None:
                    busy.append(f"slot {index}: leased")
                    continue
                if self.cfg.mode == "launch":
                    block = port_block(self.cfg, index)
                    reaped = reap_recorded_group(_record_path(self.cfg, block), self.cfg.kill_grace_s)
                    if reaped is not None:
                        log.warning("stopped CARLA server group %d left behind on port %d", reaped, block.rpc)
                    in_use = [port for port in (*block.server_ports, block.tm) if not _port_free(port)]
                    if in_use:
                        for fd in locks:
                            os.close(fd)
                        busy.append(f"slot {index}: ports {in_use} used outside the pool")
                        continue
                return index, locks
            if time.monotonic() > deadline:
                raise CarlaPoolError(
                    f"no free CARLA slot on this node within lease_timeout_s={self.cfg.lease_timeout_s:g} "
                    f"({'; '.join(busy)}): raise slots or run fewer CARLA trials per node"
                )
            time.sleep(self.cfg.poll_interval_s)


def _lock_names(cfg: CarlaPoolConfig, index: int) -> list[str]:
    """One lock per port the slot uses on this node; an attached server is keyed by its address."""
    block = port_block(cfg, index)
    if cfg.mode == "attach":
        return [f"server-{slot_host(cfg, index)}-{block.rpc}.lock", f"port-{block.tm}.lock"]
    return [f"port-{port}.lock" for port in (*block.server_ports, block.tm)]


def _lock_all(lock_dir: Path, names: list[str]) -> list[int] | None:
    """Take every lock without waiting, or none of them (None)."""
    fds: list[int] = []
    for name in names:
        fd = os.open(lock_dir / name, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            for held in fds:
                os.close(held)
            return None
        fds.append(fd)
    return fds


def _record_path(cfg: CarlaPoolConfig, block: PortBlock) -> Path:
    return cfg.lock_dir / f"carla-{block.rpc}.group"


def _port_free(port: int) -> bool:
    """True when nothing listens on `port` (CARLA binds every interface, so test all of them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _kill_container(cid_file: Path) -> None:
    """`docker kill` the container docker recorded in `cid_file`: the CLI does not pass on SIGKILL."""
    if not cid_file.exists():
        return
    container = cid_file.read_text().strip()
    cid_file.unlink()
    if container:
        subprocess.run(["docker", "kill", container], capture_output=True, timeout=60, check=False)
