"""The CARLA pool's pure parts: port blocks, config checks, launch commands, backoff, recycling."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from envs.carla.pool_config import (
    CarlaPoolConfig,
    PortBlock,
    launch_command,
    parse_address,
    port_block,
    recycle_reason,
    restart_delay,
    slot_host,
)


def local(**kw) -> CarlaPoolConfig:
    return CarlaPoolConfig(executable="/opt/carla/CarlaUE4.sh", **kw)


def test_port_blocks_are_disjoint_and_tm_ports_have_their_own_range():
    cfg = local(slots=4, base_port=2000, tm_base_port=8000)
    blocks = [port_block(cfg, i) for i in range(4)]
    assert blocks[0] == PortBlock(rpc=2000, streaming=2001, secondary=2002, tm=8000)
    assert blocks[3] == PortBlock(rpc=2009, streaming=2010, secondary=2011, tm=8003)
    ports = [p for b in blocks for p in (*b.server_ports, b.tm)]
    assert len(ports) == len(set(ports))


def test_port_stride_spaces_the_blocks():
    assert port_block(local(slots=2, port_stride=10), 1).rpc == 2010


def test_slot_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="slot must be in 0..1"):
        port_block(local(slots=2), 2)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"slots": 4, "base_port": 7995, "tm_base_port": 8000}, "overlap the server ports"),
        ({"slots": 2, "base_port": 65533}, "passes port 65535"),
        ({"servers": ("127.0.0.1:2000",)}, "servers is for mode 'attach'"),
        ({"docker_image": "carlasim/carla:0.9.16"}, "exactly one of executable"),
        ({"port_stride": 2}, "port_stride"),
        ({"slot": 2}, "Extra inputs are not permitted"),
    ],
)
def test_bad_launch_config_names_the_problem(settings, message):
    with pytest.raises(ValidationError, match=message):
        local(**settings)


def test_launch_mode_needs_a_launcher():
    with pytest.raises(ValidationError, match="exactly one of executable"):
        CarlaPoolConfig()


def test_docker_memory_limit_is_refused():
    with pytest.raises(ValidationError, match="memory_limit_mb needs a local executable"):
        CarlaPoolConfig(docker_image="carlasim/carla:0.9.16", memory_limit_mb=8000)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"servers": ()}, "needs servers"),
        ({"servers": ("node1",)}, "'node1' must be 'host:port'"),
        ({"servers": ("node1:99999",)}, "must be 'host:port'"),
        ({"servers": ("node1:2000",), "executable": "/x.sh"}, "executable is for mode 'launch'"),
        ({"servers": ("node1:2000",), "recycle_every_episodes": 5}, "recycle_every_episodes needs mode 'launch'"),
    ],
)
def test_bad_attach_config_names_the_problem(settings, message):
    with pytest.raises(ValidationError, match=message):
        CarlaPoolConfig(mode="attach", **settings)


def test_attach_slots_are_the_listed_servers():
    cfg = CarlaPoolConfig(mode="attach", servers=("10.0.0.5:2000", "10.0.0.6:3000"), tm_base_port=8100)
    assert cfg.n_slots == 2
    assert (slot_host(cfg, 1), port_block(cfg, 1).rpc, port_block(cfg, 1).tm) == ("10.0.0.6", 3000, 8101)


def test_parse_address_takes_the_last_colon():
    assert parse_address("carla-node:2000") == ("carla-node", 2000)


def test_local_launch_command_has_ports_flags_and_gpu():
    cfg = local(slots=2, server_args=("-RenderOffScreen", "-nosound", "-quality-level=Low"))
    argv = launch_command(cfg, port_block(cfg, 1), gpu_index=2)
    assert argv == [
        "/opt/carla/CarlaUE4.sh", "-RenderOffScreen", "-nosound", "-quality-level=Low",
        "-carla-rpc-port=2003", "-carla-streaming-port=2004", "-carla-secondary-port=2005",
        "-graphicsadapter=2",
    ]


def test_no_gpu_means_no_graphicsadapter_flag():
    cfg = local()
    assert not any(arg.startswith("-graphicsadapter") for arg in launch_command(cfg, port_block(cfg, 0), None))


def test_negative_gpu_is_refused():
    cfg = local()
    with pytest.raises(ValueError, match="gpu_index must be >= 0"):
        launch_command(cfg, port_block(cfg, 0), -1)


def test_docker_launch_command_uses_host_network_and_records_the_container():
    cfg = CarlaPoolConfig(docker_image="carlasim/carla:0.9.16", lock_dir=Path("/locks"))
    argv = launch_command(cfg, port_block(cfg, 0), gpu_index=1)
    assert argv[:2] == ["docker", "run"]
    assert {"--rm", "--net=host", "--cidfile=/locks/carla-2000.cid"} <= set(argv)
    image_at = argv.index("carlasim/carla:0.9.16")
    assert argv[image_at + 1] == "./CarlaUE4.sh"
    assert argv[-4:] == ["-carla-rpc-port=2000", "-carla-streaming-port=2001", "-carla-secondary-port=2002",
                         "-graphicsadapter=1"]


def test_restart_delay_doubles_up_to_the_cap():
    assert [restart_delay(k, 5.0, 30.0) for k in (1, 2, 3, 4, 5)] == [5.0, 10.0, 20.0, 30.0, 30.0]


def test_recycle_reasons():
    cfg = local(recycle_every_episodes=10, memory_limit_mb=8000)
    assert recycle_reason(9, 100.0, cfg) is None
    assert "10 episodes" in recycle_reason(10, 100.0, cfg)
    assert "8500 MB > memory_limit_mb=8000" in recycle_reason(1, 8500.0, cfg)
    assert recycle_reason(1_000, 1e9, local()) is None  # recycling is off by default
