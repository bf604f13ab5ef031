"""A stand-in CARLA server: a real process that speaks CARLA's RPC protocol for one call.

No CARLA server runs in CI, yet the pool's readiness, version and restart logic should meet a
real process and the real `carla.Client`. This program takes CARLA's own command-line flags
(so a pool launches it exactly as it launches `CarlaUE4.sh`), listens on `-carla-rpc-port`,
and answers the client's `version` call over msgpack-RPC:

    request   [0, msgid, "version", []]
    response  [1, msgid, nil, [[1, "0.9.16"]]]

CARLA wraps every result in a one-element array holding a variant `[index, value]` (index 1:
the value, index 0: an error); the client rejects a bare string with `std::bad_cast`.

Test controls, so each failure a pool must survive can be produced on demand:

    -standin-version=X          answer version X (a mismatch with the client)
    -standin-startup-delay=S    sleep S seconds before listening (a slow-starting server)
    -standin-children=N         start N child processes (a server with a process tree)
    -standin-ignore-sigterm     ignore SIGTERM (only SIGKILL stops it)
    RPC "standin_hang"          stop answering every call, keep the port open (a hung server)
    RPC "standin_args"          return the command-line flags it was started with

A crash is produced from outside, by killing the process. Other CARLA flags (-RenderOffScreen,
-nosound, -graphicsadapter=N, ...) are accepted and ignored, as the real server does.

    python -m tests.support.carla_standin -carla-rpc-port=2000 -standin-version=0.9.15
"""

from __future__ import annotations

import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack

REQUEST, RESPONSE = 0, 1
VALUE = 1  # index of the value alternative in CARLA's result variant


@dataclass(frozen=True)
class StandinOptions:
    rpc_port: int = 2000
    version: str = "0.9.16"
    startup_delay_s: float = 0.0
    children: int = 0
    ignore_sigterm: bool = False
    argv: tuple[str, ...] = field(default_factory=tuple)


def parse_args(argv: list[str]) -> StandinOptions:
    """CARLA-style flags (`-name=value`, `-flag`) into options; unknown CARLA flags are ignored."""
    values: dict[str, str] = {}
    for arg in argv:
        name, _, value = arg.lstrip("-").partition("=")
        values[name.lower()] = value
    return StandinOptions(
        rpc_port=int(values.get("carla-rpc-port", values.get("carla-world-port", "2000"))),
        version=values.get("standin-version", "0.9.16"),
        startup_delay_s=float(values.get("standin-startup-delay", "0")),
        children=int(values.get("standin-children", "0")),
        ignore_sigterm="standin-ignore-sigterm" in values,
        argv=tuple(argv),
    )


def carla_result(value: Any) -> list[Any]:
    """A return value wrapped as CARLA's server wraps it: `[[1, value]]`."""
    return [[VALUE, value]]


class _Handler(socketserver.BaseRequestHandler):
    """One client connection: a stream of msgpack-RPC requests, answered in order."""

    server: _StandinServer

    def handle(self) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            try:
                data = self.request.recv(65536)
            except OSError:
                return
            if not data:
                return
            unpacker.feed(data)
            for message in unpacker:
                reply = self.server.answer(message)
                if reply is not None:
                    self.request.sendall(msgpack.packb(reply))


class _StandinServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, options: StandinOptions) -> None:
        super().__init__(("127.0.0.1", options.rpc_port), _Handler)
        self.options = options
        self.hung = threading.Event()

    def answer(self, message: Any) -> list[Any] | None:
        """The response to one message, or None for notifications and while hung."""
        if self.hung.is_set() or not isinstance(message, list) or message[0] != REQUEST:
            return None
        _, msgid, method, _params = message
        if method == "version":
            return [RESPONSE, msgid, None, carla_result(self.options.version)]
        if method == "standin_args":
            return [RESPONSE, msgid, None, carla_result(list(self.options.argv))]
        if method == "standin_hang":
            self.hung.set()
            return None
        return [RESPONSE, msgid, f"stand-in CARLA server: no function {method!r}", None]


def main(argv: list[str]) -> None:
    options = parse_args(argv)
    if options.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Children inherit the process group, as a real CarlaUE4.sh's engine process does.
    children = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1e9)"]) for _ in range(options.children)
    ]
    time.sleep(options.startup_delay_s)
    try:
        with _StandinServer(options) as server:
            server.serve_forever(poll_interval=0.1)
    finally:
        for child in children:
            child.kill()


def send_request(port: int, method: str, host: str = "127.0.0.1", timeout_s: float = 2.0) -> Any:
    """Call `method` on a stand-in and return its unwrapped value (None when no answer comes).

    Used by tests to drive the controls above; the pool itself talks through `carla.Client`.
    """
    with socket.create_connection((host, port), timeout=timeout_s) as conn:
        conn.sendall(msgpack.packb([REQUEST, 1, method, []]))
        unpacker = msgpack.Unpacker(raw=False)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return None
                unpacker.feed(data)
                for _kind, _msgid, error, result in unpacker:
                    if error is not None:
                        raise RuntimeError(error)
                    return result[0][VALUE]
        except TimeoutError:
            return None


if __name__ == "__main__":
    main(sys.argv[1:])
