"""Processes seen from /proc, for the tests that check what a command leaves running: every process with its
group, a process's descendants, the sockets they listen on, and waits until some are gone."""

from __future__ import annotations

import os
from pathlib import Path


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (process group, command line) of every running process (zombies left out)."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state, _, pgid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError, IndexError):
            continue
        if state != "Z":  # a zombie has exited: only its parent has not read its status yet
            out[int(proc.name)] = (int(pgid), cmd)
    return out


def descendants(pid: int) -> set[int]:
    """Every live process started by ``pid``, however deep (Ray's GCS, raylet, agents and workers included)."""
    parents = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket some process in ``pids`` listens on, read from /proc."""
    import ipaddress

    inodes = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # state LISTEN, owned by one of pids
                hex_ip, hex_port = fields[1].split(":")
                raw = bytes.fromhex(hex_ip)
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # /proc prints host order
                ip = ipaddress.ip_address(raw)
                out.add((str(getattr(ip, "ipv4_mapped", None) or ip), int(hex_port, 16)))  # ::ffff:a.b.c.d
    return out


def wait_until_dead(pids: set[int], wait_s: float = 30) -> set[int]:
    """Those of ``pids`` still running after up to ``wait_s`` seconds."""
    import time

    deadline = time.monotonic() + wait_s
    while pids & processes().keys() and time.monotonic() < deadline:
        time.sleep(0.5)
    return pids & processes().keys()


def server_groups(db: Path) -> set[int]:
    """Process groups of the processes serving store ``db`` (its watchdog and mlflow server)."""

    return {pgid for pgid, cmd in processes().values() if str(db) in cmd} - {os.getpgrp()}


def alive_in(groups: set[int]) -> list[str]:
    """Command lines of live processes in ``groups`` (uvicorn and its workers included)."""
    return [cmd for pgid, cmd in processes().values() if pgid in groups]


def wait_until_gone(groups: set[int], wait_s: float = 30) -> list[str]:
    import time

    deadline = time.monotonic() + wait_s
    while alive_in(groups) and time.monotonic() < deadline:
        time.sleep(0.5)
    return alive_in(groups)
