"""The CARLA pool's settings and the decisions that follow from them, as pure functions.

Everything here is arithmetic on the config (no processes, sockets or files), so it is tested
alone; `envs.carla.pool` does the I/O. A slot `i` on a node owns

    RPC port        P = base_port + i * port_stride
    streaming port  P + 1
    secondary port  P + 2           (CARLA's multi-GPU port; it opens it even when unused)
    traffic manager tm_base_port + i  (its own range: the default 8000 collides between servers)

and the config's validation guarantees that no two slots share a port.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_PORT = 65535
PORTS_PER_BLOCK = 3  # RPC, streaming, secondary


class CarlaPoolConfig(BaseModel):
    """How trials on one node get a CARLA server: launched per slot, or attached to running ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["launch", "attach"] = Field("launch", description="start servers, or use `servers`")
    executable: str | None = Field(None, description="launch: path of CarlaUE4.sh")
    docker_image: str | None = Field(None, description="launch: image to run instead, e.g. carlasim/carla:0.9.16")
    server_args: tuple[str, ...] = Field(("-RenderOffScreen", "-nosound"), description="launch: extra server flags")
    servers: tuple[str, ...] = Field((), description="attach: 'host:port' of running servers, one per slot")
    host: str = Field("127.0.0.1", description="launch: address the launched servers are reached at")
    slots: int = Field(1, ge=1, description="launch: servers one node may run at once")
    base_port: int = Field(2000, ge=1, le=MAX_PORT)
    port_stride: int = Field(PORTS_PER_BLOCK, ge=PORTS_PER_BLOCK, description="distance between slots' RPC ports")
    tm_base_port: int = Field(8000, ge=1, le=MAX_PORT)
    lock_dir: Path = Field(Path(tempfile.gettempdir()) / "carla-pool", description="shared by every trial on a node")
    log_dir: Path | None = Field(None, description="launch: server output goes to log_dir/carla-<port>.log")
    lease_timeout_s: float = Field(600.0, gt=0, description="wait this long for a free slot")
    startup_timeout_s: float = Field(120.0, gt=0, description="wait this long for a launched server to answer")
    probe_timeout_s: float = Field(2.0, gt=0, description="one version call; no answer within it = hung")
    poll_interval_s: float = Field(1.0, gt=0)
    max_restarts: int = Field(3, ge=0, description="failed starts and restarts allowed per lease")
    backoff_s: float = Field(5.0, ge=0, description="wait before restart k: backoff_s * 2**(k-1)")
    backoff_max_s: float = Field(60.0, ge=0)
    kill_grace_s: float = Field(10.0, ge=0, description="SIGTERM, then SIGKILL after this long")
    recycle_every_episodes: int | None = Field(None, ge=1, description="launch: restart a server this often")
    memory_limit_mb: float | None = Field(None, gt=0, description="launch: restart a server past this RSS")

    @model_validator(mode="after")
    def _check(self) -> CarlaPoolConfig:
        for problem in config_problems(self):
            raise ValueError(problem)
        return self

    @property
    def n_slots(self) -> int:
        """Slots on this node: `slots` when launching, one per listed server when attaching."""
        return len(self.servers) if self.mode == "attach" else self.slots


def config_problems(cfg: CarlaPoolConfig) -> list[str]:
    """Why a pool config cannot work (empty when it can); the first one is raised."""
    problems: list[str] = []
    launchers = [name for name in ("executable", "docker_image") if getattr(cfg, name) is not None]
    if cfg.mode == "launch":
        if len(launchers) != 1:
            problems.append("mode 'launch' needs exactly one of executable (CarlaUE4.sh) or docker_image")
        if cfg.servers:
            problems.append("servers is for mode 'attach'; mode 'launch' starts its own")
        if cfg.docker_image is not None and cfg.memory_limit_mb is not None:
            problems.append("memory_limit_mb needs a local executable: a container's memory is not in our process group")
        rpc_end = cfg.base_port + cfg.port_stride * (cfg.slots - 1) + PORTS_PER_BLOCK - 1
        if rpc_end > MAX_PORT:
            problems.append(f"base_port {cfg.base_port} + {cfg.slots} slots x port_stride {cfg.port_stride} "
                            f"passes port {MAX_PORT}")
        tm_end = cfg.tm_base_port + cfg.slots - 1
        if cfg.tm_base_port <= rpc_end and cfg.base_port <= tm_end:
            problems.append(f"traffic-manager ports {cfg.tm_base_port}-{tm_end} overlap the server ports "
                            f"{cfg.base_port}-{rpc_end}: move tm_base_port")
    else:
        if launchers:
            problems.append(f"{', '.join(launchers)} is for mode 'launch'; mode 'attach' uses running servers")
        if not cfg.servers:
            problems.append("mode 'attach' needs servers: a list of 'host:port'")
        for name in ("recycle_every_episodes", "memory_limit_mb"):
            if getattr(cfg, name) is not None:
                problems.append(f"{name} needs mode 'launch': an attached server is not ours to restart")
        for address in cfg.servers:
            try:
                parse_address(address)
            except ValueError as err:
                problems.append(str(err))
    if cfg.tm_base_port + cfg.n_slots - 1 > MAX_PORT:
        problems.append(f"tm_base_port {cfg.tm_base_port} + {cfg.n_slots} slots passes port {MAX_PORT}")
    return problems


def parse_address(address: str) -> tuple[str, int]:
    """'host:port' -> (host, port), with a clear error for anything else."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= MAX_PORT:
        raise ValueError(f"server address {address!r} must be 'host:port' with a port in 1-{MAX_PORT}")
    return host, int(port)


@dataclass(frozen=True)
class PortBlock:
    """The ports one slot owns (see the module docstring)."""

    rpc: int
    streaming: int
    secondary: int
    tm: int

    @property
    def server_ports(self) -> tuple[int, int, int]:
        return self.rpc, self.streaming, self.secondary


def port_block(cfg: CarlaPoolConfig, slot: int) -> PortBlock:
    """Ports of slot `slot` (0-based). Attach mode: the listed server's port, and its own TM port."""
    if not 0 <= slot < cfg.n_slots:
        raise ValueError(f"slot must be in 0..{cfg.n_slots - 1}, got {slot}")
    rpc = parse_address(cfg.servers[slot])[1] if cfg.mode == "attach" else cfg.base_port + slot * cfg.port_stride
    return PortBlock(rpc=rpc, streaming=rpc + 1, secondary=rpc + 2, tm=cfg.tm_base_port + slot)


def slot_host(cfg: CarlaPoolConfig, slot: int) -> str:
    """Where the client reaches slot `slot`'s server."""
    return parse_address(cfg.servers[slot])[0] if cfg.mode == "attach" else cfg.host


def launch_command(cfg: CarlaPoolConfig, block: PortBlock, gpu_index: int | None) -> list[str]:
    """The argv that starts slot `block`'s server on GPU `gpu_index` (None: the default adapter).

    Docker runs with host networking (the ports are the node's) and every GPU visible, so
    `-graphicsadapter=N` means the same physical GPU Ray gave the trial in both launchers. The
    docker CLI passes SIGTERM on to the container (`--init` forwards it to the server); the
    container id goes to `container_id_file` so the pool can `docker kill` a container whose
    CLI it had to SIGKILL, which the kernel would not pass on.
    """
    server_flags = [
        *cfg.server_args,
        f"-carla-rpc-port={block.rpc}",
        f"-carla-streaming-port={block.streaming}",
        f"-carla-secondary-port={block.secondary}",
    ]
    if gpu_index is not None:
        if gpu_index < 0:
            raise ValueError(f"gpu_index must be >= 0 or None, got {gpu_index}")
        server_flags.append(f"-graphicsadapter={gpu_index}")
    if cfg.executable is not None:
        return [cfg.executable, *server_flags]
    if cfg.docker_image is not None:
        docker = ["docker", "run", "--rm", "--init", "--net=host", "--gpus=all"]
        docker.append(f"--cidfile={container_id_file(cfg, block)}")
        return [*docker, cfg.docker_image, "./CarlaUE4.sh", *server_flags]
    raise ValueError("launch_command needs mode 'launch' with executable or docker_image")


def container_id_file(cfg: CarlaPoolConfig, block: PortBlock) -> Path:
    """Where docker writes the id of slot `block`'s container."""
    return cfg.lock_dir / f"carla-{block.rpc}.cid"


def restart_delay(attempt: int, backoff_s: float, backoff_max_s: float) -> float:
    """Seconds to wait before restart number `attempt` (1-based): doubling, capped."""
    return float(min(backoff_s * 2 ** (attempt - 1), backoff_max_s))


def recycle_reason(episodes: int, rss_mb: float | None, cfg: CarlaPoolConfig) -> str | None:
    """Why a healthy server should be restarted now (CARLA servers leak memory), or None."""
    if cfg.recycle_every_episodes is not None and episodes >= cfg.recycle_every_episodes:
        return f"{episodes} episodes since start (recycle_every_episodes={cfg.recycle_every_episodes})"
    if cfg.memory_limit_mb is not None and rss_mb is not None and rss_mb > cfg.memory_limit_mb:
        return f"resident memory {rss_mb:.0f} MB > memory_limit_mb={cfg.memory_limit_mb:g}"
    return None
