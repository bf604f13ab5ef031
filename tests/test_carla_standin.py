"""The stand-in CARLA server's command line: CARLA's own flags plus the test controls."""

from tests.support.carla_standin import StandinOptions, parse_args


def test_carla_flags_set_the_port_and_unknown_flags_are_ignored():
    options = parse_args(["-RenderOffScreen", "-nosound", "-carla-rpc-port=2400", "-graphicsadapter=1"])
    assert options.rpc_port == 2400
    assert options.argv == ("-RenderOffScreen", "-nosound", "-carla-rpc-port=2400", "-graphicsadapter=1")


def test_world_port_is_an_alias_as_in_carla():
    assert parse_args(["-carla-world-port=3000"]).rpc_port == 3000


def test_controls():
    options = parse_args(["-standin-version=0.9.15", "-standin-startup-delay=1.5", "-standin-children=2",
                          "-standin-ignore-sigterm"])
    assert (options.version, options.startup_delay_s, options.children, options.ignore_sigterm) == ("0.9.15", 1.5, 2, True)


def test_defaults_are_a_healthy_0_9_16_server_on_2000():
    assert parse_args([]) == StandinOptions(rpc_port=2000, version="0.9.16", argv=())
