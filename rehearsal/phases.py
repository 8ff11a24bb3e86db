"""The rehearsal's set-up and phases, in order, under the client host's load:

- a. ``upgrade``: diamonds from the first release tag to the second in Kubernetes' order
  (maxSurge 1, maxUnavailable 0): a new replica up and ready, one old one drained in HAProxy
  (the endpoint removed), then SIGTERM (its graceful drain), repeat;
- b. ``kill``: SIGKILL of one serving process and its workers, and a replacement;
- c. penguins answering throughout, on hosts of their own, untouched;
- d. ``control``: the same upgrade (back to the first tag) and kill through a frontend with no
  retries, without draining: it must show errors.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rehearsal.balancer import CONTROL_PORT, FRONT_PORT, Balancer, config_text
from rehearsal.bentos import Bentos
from rehearsal.hosts import Replica, start_replica
from rehearsal.network import Network

READY_TIMEOUT_S = 240


@dataclass(frozen=True)
class Shape:
    """How big a rehearsal is: diamonds replicas (plus one host to surge on), penguins
    replicas, seconds of steady load between the steps."""

    diamonds: int
    penguins: int
    steady_s: float

    def hosts(self) -> dict[str, int]:
        """Host name -> last byte of its address."""
        hosts = {"lb": 2, "client": 3}
        hosts.update({f"d{i}": 10 + i for i in range(1, self.diamonds + 2)})
        hosts.update({f"p{i}": 30 + i for i in range(1, self.penguins + 1)})
        return hosts


FULL = Shape(diamonds=3, penguins=2, steady_s=8)
QUICK = Shape(diamonds=2, penguins=2, steady_s=3)


@dataclass
class Timeline:
    """Phases (name, start, end) and events (time, text), in Unix time, with HAProxy's
    retry counters at each phase's edges."""

    phases: list[dict] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)

    def event(self, text: str) -> None:
        self.events.append((time.time(), text))
        print(f"rehearsal: {text}", file=sys.stderr, flush=True)

    def begin(self, name: str, balancer: Balancer) -> None:
        self.phases.append({"name": name, "start": time.time(), "retries0": balancer.retries()})

    def end(self, balancer: Balancer) -> None:
        phase = self.phases[-1]
        phase["end"], after = time.time(), balancer.retries()
        before = phase.pop("retries0")
        phase["haproxy_retries"] = {k: after[k] - before.get(k, 0) for k in after}


class Rehearsal:
    """The hosts, the balancer and the replicas of one rehearsal (``teardown`` undoes all)."""

    def __init__(self, shape: Shape, bentos: Bentos, folder: Path) -> None:
        self.shape, self.bentos, self.folder = shape, bentos, folder
        self.network = Network()
        self.balancer: Balancer | None = None
        self.replicas: dict[str, Replica] = {}  # host -> its diamonds or penguins replica
        self.clients: list[subprocess.Popen] = []
        self.timeline = Timeline()

    # --- set-up ---------------------------------------------------------------------------

    def set_up(self) -> None:
        self.network.create(self.shape.hosts())
        hosts = self.network.hosts
        diamonds = {h: a for h, a in hosts.items() if h.startswith("d")}
        penguins = {h: a for h, a in hosts.items() if h.startswith("p")}
        config = config_text(hosts["lb"], self.folder, diamonds, penguins)
        (self.folder / "haproxy.cfg").write_text(config)
        self.balancer = Balancer(self.folder, self.network.command("lb"))
        first = self.bentos.diamonds[0]
        for i in range(1, self.shape.diamonds + 1):
            self.start(f"d{i}", first)
        for i in range(1, self.shape.penguins + 1):
            self.start(f"p{i}", self.bentos.penguins)
        for host in self.replicas:
            self.wait_up(host)
        self.timeline.event(f"{len(self.replicas)} replicas up behind HAProxy")

    def start(self, host: str, bento: str) -> None:
        command = self.network.command(host)
        self.replicas[host] = start_replica(
            command, host, bento, self.bentos.bentoml_home, self.folder
        )

    def backends(self, host: str) -> list[str]:
        return ["penguins"] if host.startswith("p") else ["diamonds", "diamonds_control"]

    def wait_up(self, host: str, backend: str | None = None) -> None:
        """Until HAProxy's checks of /readyz pass (the replica is ready)."""
        assert self.balancer is not None
        replica = self.replicas[host]
        deadline = time.monotonic() + READY_TIMEOUT_S
        for name in [backend] if backend else self.backends(host):
            while self.balancer.status(name, host) != "UP":
                if replica.process.poll() is not None:
                    raise RuntimeError(f"bentoml serve on {host} exited: see {replica.log}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{host} not ready after {READY_TIMEOUT_S} s")
                time.sleep(0.1)

    # --- load -----------------------------------------------------------------------------

    def start_client(self, name: str, port: int) -> tuple[subprocess.Popen, Path, Path]:
        lb = self.network.hosts["lb"]
        stop, ready = self.folder / f"{name}.stop", self.folder / f"{name}.ready"
        out = self.folder / f"{name}.jsonl"
        cmd = [sys.executable, "-m", "rehearsal.load", "--stop", str(stop), "--ready", str(ready)]
        cmd += ["--out", str(out), "--penguins", f"http://{lb}:{FRONT_PORT}/penguins"]
        cmd += ["--diamonds", f"http://{lb}:{port}/diamonds"]
        log = (self.folder / f"{name}.log").open("ab")
        client = subprocess.Popen(
            self.network.command("client", *cmd), stdout=log, stderr=subprocess.STDOUT
        )
        self.clients.append(client)
        deadline = time.monotonic() + 180
        while not ready.exists():
            if client.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the load client did not start: see {self.folder / name}.log")
            time.sleep(0.1)
        return client, stop, out

    @staticmethod
    def stop_client(client: subprocess.Popen, stop: Path, out: Path) -> list[list]:
        import json

        stop.touch()
        client.wait(120)
        return [json.loads(line) for line in out.read_text().splitlines()]

    def steady(self, name: str) -> None:
        assert self.balancer is not None
        self.timeline.begin(name, self.balancer)
        time.sleep(self.shape.steady_s)
        self.timeline.end(self.balancer)

    # --- the phases -----------------------------------------------------------------------

    def roll(self, target: str, drain: bool, backend: str) -> None:
        """Every diamonds replica replaced by one of ``target``, one at a time: the new one
        up and ready, then the old one (drained first if ``drain``) sent SIGTERM."""
        assert self.balancer is not None
        old = sorted(h for h, r in self.replicas.items() if h.startswith("d"))
        free = [h for h in self.diamond_hosts() if h not in self.replicas]
        for host in old:
            new = free.pop(0)
            self.start(new, target)
            self.balancer.set_state("diamonds", new, "ready")
            self.wait_up(new, backend)
            self.timeline.event(f"{target} ready on {new}")
            if drain:
                self.balancer.set_state("diamonds", host, "drain")
                self.wait_idle(host)
                self.timeline.event(f"{host} drained")
            took = self.replicas.pop(host).terminate()
            self.timeline.event(f"{host} stopped by SIGTERM in {took:.1f} s")
            free.append(host)

    def wait_idle(self, host: str, timeout: float = 30) -> None:
        """Kubernetes' preStop sleep, here exact: until HAProxy has no request on ``host``."""
        assert self.balancer is not None
        time.sleep(0.5)  # the endpoint's removal reaching every proxy
        deadline = time.monotonic() + timeout
        while self.balancer.current_sessions("diamonds", host) and time.monotonic() < deadline:
            time.sleep(0.05)

    def diamond_hosts(self) -> list[str]:
        return [f"d{i}" for i in range(1, self.shape.diamonds + 2)]

    def lose_one(self, backend: str) -> None:
        """SIGKILL one diamonds replica (its server and workers) mid-load; a replacement of
        the same bento on the free host, up and ready."""
        assert self.balancer is not None
        victim = sorted(h for h in self.replicas if h.startswith("d"))[0]
        replica = self.replicas.pop(victim)
        replica.kill()
        self.timeline.event(f"{victim} lost (SIGKILL)")
        new = next(h for h in self.diamond_hosts() if h not in self.replicas and h != victim)
        self.start(new, replica.bento)
        self.balancer.set_state("diamonds", new, "ready")
        self.wait_up(new, backend)
        self.timeline.event(f"replacement ready on {new}")

    def run(self) -> dict[str, list[list]]:
        """Phases a to d: the answers of the rehearsal and of the control."""
        assert self.balancer is not None
        first, second = self.bentos.diamonds
        client, stop, out = self.start_client("rehearsal", FRONT_PORT)
        self.steady("steady")
        self.timeline.begin("upgrade", self.balancer)
        self.roll(second, drain=True, backend="diamonds")
        self.timeline.end(self.balancer)
        self.steady("steady after upgrade")
        self.timeline.begin("kill", self.balancer)
        self.lose_one("diamonds")
        self.timeline.end(self.balancer)
        self.steady("steady after kill")
        answers = {"rehearsal": self.stop_client(client, stop, out)}
        self.timeline.event("control: no drain, no retries")
        client, stop, out = self.start_client("control", CONTROL_PORT)
        self.timeline.begin("control", self.balancer)
        self.roll(first, drain=False, backend="diamonds_control")
        self.lose_one("diamonds_control")
        time.sleep(self.shape.steady_s)
        self.timeline.end(self.balancer)
        answers["control"] = self.stop_client(client, stop, out)
        return answers

    def teardown(self) -> None:
        """Everything this rehearsal started, stopped; its namespaces deleted. Never raises."""
        for client in self.clients:
            if client.poll() is None:
                client.kill()
        stop_all(list(self.replicas.values()))
        self.replicas.clear()
        if self.balancer is not None:
            with contextlib.suppress(Exception):
                self.balancer.stop()
        self.network.teardown()


def stop_all(replicas: list[Replica], timeout: float = 20) -> None:
    """SIGTERM every replica at once (each cleans up after itself), SIGKILL those still
    running after ``timeout``; the namespaces' teardown kills whatever is left. Never raises."""
    for replica in replicas:
        with contextlib.suppress(OSError):
            replica.process.terminate()
    deadline = time.monotonic() + timeout
    for replica in replicas:
        with contextlib.suppress(Exception):
            replica.process.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(Exception):
            replica.kill()
