"""Hosts made of network namespaces: a switch namespace holding a bridge, and one namespace
per host joined to it by a veth pair. Every interface is created inside these namespaces
(never in the machine's own), and the only addresses are private ones on that bridge."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field

SUBNET = "10.231.0"
PREFIX = 24


class NetworkError(RuntimeError):
    """An ``ip`` command failed."""


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Network:
    """The namespaces of one rehearsal, named after its process so two never collide."""

    tag: str = field(default_factory=lambda: f"rh{os.getpid()}")
    hosts: dict[str, str] = field(default_factory=dict)  # host name -> its address
    made: list[str] = field(default_factory=list)  # namespaces created, in order

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    def namespace(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def create(self, hosts: dict[str, int]) -> None:
        """The switch and one namespace per host (``name -> last address byte``)."""
        sweep_dead_rehearsals()
        self.add_namespace(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for index, (host, last) in enumerate(hosts.items()):
            ns = self.namespace(host)
            self.add_namespace(ns)
            port = f"p{index}"
            # Both ends made in the switch namespace, one moved straight into the host's.
            ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", ns)  # fmt: skip
            ip("-n", self.switch, "link", "set", port, "master", "br0")
            ip("-n", self.switch, "link", "set", port, "up")
            address = f"{SUBNET}.{last}"
            ip("-n", ns, "addr", "add", f"{address}/{PREFIX}", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            self.hosts[host] = address

    def add_namespace(self, ns: str) -> None:
        ip("netns", "add", ns)
        self.made.append(ns)
        ip("-n", ns, "link", "set", "lo", "up")  # bentoml serve needs lo even on 0.0.0.0

    def command(self, host: str, *cmd: str) -> list[str]:
        """``cmd`` run on ``host``."""
        return ["ip", "netns", "exec", self.namespace(host), *cmd]

    def teardown(self) -> None:
        """SIGKILL every process left in the namespaces, then delete them. Never raises."""
        for ns in reversed(self.made):
            kill_namespace(ns)
            with contextlib.suppress(NetworkError, subprocess.SubprocessError):
                ip("netns", "del", ns)
        self.made.clear()


def namespace_pids(ns: str) -> list[int]:
    with contextlib.suppress(NetworkError, subprocess.SubprocessError):
        return [int(pid) for pid in ip("netns", "pids", ns).split()]
    return []


def kill_namespace(ns: str, timeout: float = 10) -> None:
    """SIGKILL every process in ``ns`` and wait until none is left."""
    deadline = time.monotonic() + timeout
    while (pids := namespace_pids(ns)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def sweep_dead_rehearsals() -> None:
    """Delete the namespaces of rehearsals whose process is gone (one killed by SIGKILL,
    which no handler sees); their bridge would hold the same addresses."""
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        found = re.match(r"^rh(\d+)-", name)
        if found and not pid_alive(int(found[1])):
            kill_namespace(name)
            with contextlib.suppress(NetworkError, subprocess.SubprocessError):
                ip("netns", "del", name)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
