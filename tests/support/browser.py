"""A real browser and a real MLflow UI for the tests: ``mlflow ui`` on 127.0.0.1 against a store, and
Debian's ``chromium`` headless, driven over the DevTools protocol (``websocket-client``) so a test
waits for what the page renders after its JavaScript ran, reads it and takes a screenshot. Test
support, not shipped.

Both run in their own process groups and are ended with them: ``mlflow ui`` starts uvicorn workers
that outlive their parent otherwise.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import websocket

CHROMIUM = "chromium"  # Debian's package (the Makefile's install puts it there)
PAGE_TIMEOUT_S = 120.0  # a cold UI on two busy cores: its first page takes ~20 s here


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def chromium_path() -> str | None:
    return shutil.which(CHROMIUM)


def _stop(process: subprocess.Popen) -> None:
    """End a process started with ``start_new_session`` and everything in its group."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


def _wait_http(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"nothing served {url} within {timeout_s:.0f} s")


@contextmanager
def mlflow_ui(tracking_uri: str, log: Path) -> Iterator[str]:
    """``mlflow ui --backend-store-uri tracking_uri`` on a free port of 127.0.0.1, as a user starts
    it (one worker and no job runner: the UI needs neither on two cores); yields its base URL."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", tracking_uri,
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/health", process, PAGE_TIMEOUT_S)
        yield base
    finally:
        _stop(process)


class Page:
    """One browser tab over the DevTools protocol: navigate, evaluate JavaScript, screenshot."""

    def __init__(self, socket_url: str) -> None:
        self._socket = websocket.create_connection(socket_url, timeout=PAGE_TIMEOUT_S, suppress_origin=True)
        self._next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, timeout_s: float = PAGE_TIMEOUT_S) -> Any:
        """The value of ``expression`` once it is truthy in the rendered page (the DOM after the UI's
        JavaScript ran and its requests came back); while the page loads it may also raise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError:  # no document.body yet, say
                value = None
            if value:
                return value
            time.sleep(0.5)
        text = self.evaluate("document.body ? document.body.innerText : ''")
        raise TimeoutError(f"not rendered within {timeout_s:.0f} s: {expression}\npage text:\n{text[:3000]}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self._socket.close()


@contextmanager
def headless_chromium(profile: Path, width: int = 1800, height: int = 1000) -> Iterator[Page]:
    """Headless ``chromium`` with a fresh profile (a new user's browser), its one tab as a ``Page``;
    its console output goes to ``chromium.log`` beside the profile."""
    binary = chromium_path()
    if binary is None:
        raise FileNotFoundError(f"{CHROMIUM} is not installed (make install installs it)")
    port = free_port()
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--remote-debugging-port={port}",
               f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]  # fmt: skip
    with (profile.parent / "chromium.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    page = None
    try:
        devtools = f"http://127.0.0.1:{port}"
        _wait_http(f"{devtools}/json/version", process, PAGE_TIMEOUT_S)
        with urllib.request.urlopen(f"{devtools}/json/list", timeout=10) as response:
            tabs = [tab for tab in json.load(response) if tab["type"] == "page"]
        page = Page(tabs[0]["webSocketDebuggerUrl"])
        page.call("Page.enable")
        yield page
    finally:
        if page is not None:
            page.close()
        _stop(process)
