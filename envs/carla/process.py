"""Server processes as process groups: start one, measure it, and end it with nothing left over.

A CARLA server is a tree (`CarlaUE4.sh` starts the engine binary, the engine its helpers), so
the pool starts each server as the leader of a new session and process group and treats the
group as the server: its memory is the group's resident memory, and stopping it signals the
whole group (`os.killpg`), never processes found by name, which on a shared node would hit
every other trial's server too.

A trial killed with SIGKILL cannot stop its server, so the pool records each server's group in
a small file next to the slot's lock; whoever takes the slot next ends a recorded group that is
still alive (`reap_recorded_group`). The record holds the leader's start time as well as its
pid: a pid can be reused, a (pid, start time) pair cannot.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

_POLL_S = 0.05
_KILL_WAIT_S = 10.0  # after SIGKILL, the kernel needs only moments; more means something is wrong


def start_group(argv: list[str], log_path: Path | None) -> subprocess.Popen[bytes]:
    """Start `argv` as the leader of its own session and process group (pgid == pid)."""
    if log_path is None:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def group_members(pgid: int) -> list[psutil.Process]:
    """Living processes of group `pgid` (zombies are dead: they only wait for their parent)."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
    return members


def group_rss_mb(pgid: int) -> float:
    """Resident memory of the whole group in MB."""
    total = 0
    for process in group_members(pgid):
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total / 2**20


def kill_group(pgid: int, grace_s: float) -> None:
    """SIGTERM the group, wait up to `grace_s` for it to exit, then SIGKILL what is left.

    Returns once no living process of the group remains; raises if one survives SIGKILL (a
    process stuck in the kernel), because a pool that left it would lose the slot's ports.
    """
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, _KILL_WAIT_S)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while group_members(pgid):
            if time.monotonic() > deadline:
                break
            time.sleep(_POLL_S)
        else:
            return
    raise RuntimeError(f"process group {pgid} survived SIGKILL for {_KILL_WAIT_S:g} s")


def record_group(path: Path, pgid: int) -> None:
    """Write group `pgid` and its leader's start time to `path` (see the module docstring)."""
    path.write_text(f"{pgid} {psutil.Process(pgid).create_time()!r}\n")


def reap_recorded_group(path: Path, grace_s: float) -> int | None:
    """End the group recorded in `path` if it is still alive; returns its pgid if it was. Deletes `path`.

    The group is ours when its leader is the recorded process (same start time), or when the
    leader is gone but members remain: the kernel does not hand out a pid still in use as a
    process group id, so that group cannot be someone else's.
    """
    if not path.exists():
        return None
    pgid_text, _, started_text = path.read_text().partition(" ")
    path.unlink()
    pgid, started = int(pgid_text), float(started_text)
    try:
        if psutil.Process(pgid).create_time() != started:
            return None  # the pid now belongs to an unrelated process
    except psutil.NoSuchProcess:
        pass
    if not group_members(pgid):
        return None
    kill_group(pgid, grace_s)
    return pgid
