"""Launching the stand-in CARLA server (tests/support/carla_standin.py) as a pool launches
CARLA, and finding free ports for it. Test support, not shipped; moved out of
test_carla_pool.py."""

from __future__ import annotations

import random
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def standin_script(tmp_path: Path, *flags: str, name: str = "CarlaUE4.sh") -> str:
    """A CarlaUE4.sh that execs the stand-in server with `flags` before the pool's flags."""
    script = tmp_path / name
    script.write_text(
        f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m tests.support.carla_standin {' '.join(flags)} \"$@\"\n"
    )
    script.chmod(0o755)
    return str(script)


def free_base_port(n_ports: int) -> int:
    """A base port below the ephemeral range with `n_ports` free ports from it."""
    for _ in range(100):
        base = random.randrange(20000, 30000 - n_ports)
        try:
            for port in range(base, base + n_ports):
                with socket.socket() as probe:
                    probe.bind(("0.0.0.0", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range found")
