"""The load balancer host: Debian's HAProxy, its configuration, and its runtime API on a unix
socket (drain, ready, per-server state and retry counters)."""

from __future__ import annotations

import csv
import io
import socket
import subprocess
import time
from pathlib import Path

FRONT_PORT = 8080  # the rehearsal: retries, redispatch, drain
CONTROL_PORT = 8081  # the negative control: no retries, no redispatch (and no drain)
SERVER_PORT = 3000

CONFIG = """\
global
    maxconn 4000
    stats socket {socket} mode 600 level admin
    pidfile {pidfile}
    # Only the abnormal requests are logged (dontlog-normal), with their termination state.
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option dontlog-normal
    timeout connect 1s
    # Longer than the service's own request timeout: HAProxy never cuts an answer coming.
    timeout server 65s
    timeout client 65s
    # A request must arrive whole (headers and body) within this, buffered before it is
    # sent on: a slow or vanished client holds nothing of a server's.
    timeout http-request 5s
    option http-buffer-request
    timeout queue 10s
    # /readyz every 500 ms; a check may take 2 s (a replica starting beside it takes the
    # cores for seconds), and 3 failures in a row mark a server down: a dead one is down
    # within 1.5 s, and retries with redispatch cover that time.
    default-server check inter 500ms fall 3 rise 2
    timeout check 2s

frontend models
    bind {address}:{front}
    use_backend penguins if {{ path_beg /penguins/ }}
    use_backend diamonds if {{ path_beg /diamonds/ }}

frontend control
    bind {address}:{control}
    use_backend penguins if {{ path_beg /penguins/ }}
    use_backend diamonds_control if {{ path_beg /diamonds/ }}

backend diamonds
{retrying}
    option httpchk GET /readyz
    http-request replace-path /diamonds(/.*) \\1
{diamonds}

backend penguins
{retrying}
    option httpchk GET /readyz
    http-request replace-path /penguins(/.*) \\1
{penguins}

backend diamonds_control
    retries 0
    no option redispatch
    retry-on none
    option httpchk GET /readyz
    http-request replace-path /diamonds(/.*) \\1
{diamonds}
"""
# A prediction is a pure function: a request whose connection failed or that got no answer
# is safe to send again, to another server.
RETRYING = """\
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout"""


def server_lines(addresses: dict[str, str]) -> str:
    return "\n".join(f"    server {h} {a}:{SERVER_PORT}" for h, a in addresses.items())


def config_text(
    address: str, folder: Path, diamonds: dict[str, str], penguins: dict[str, str]
) -> str:
    return CONFIG.format(
        socket=folder / "haproxy.sock",
        pidfile=folder / "haproxy.pid",
        address=address,
        front=FRONT_PORT,
        control=CONTROL_PORT,
        retrying=RETRYING,
        diamonds=server_lines(diamonds),
        penguins=server_lines(penguins),
    )


class Balancer:
    """HAProxy running on the load balancer host, driven through its runtime API."""

    def __init__(self, folder: Path, command: list[str]) -> None:
        self.socket = folder / "haproxy.sock"
        self.log = folder / "haproxy.log"
        config = folder / "haproxy.cfg"
        check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(
                f"haproxy -c refused the configuration: {check.stdout}{check.stderr}"
            )
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, "haproxy", "-db", "-f", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def api(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def set_state(self, backend: str, server: str, state: str) -> None:
        """``state``: ready, drain or maint."""
        answer = self.api(f"set server {backend}/{server} state {state}").strip()
        if answer:
            raise RuntimeError(f"haproxy: set server {backend}/{server} state {state}: {answer}")

    def stats(self) -> list[dict[str, str]]:
        text = self.api("show stat").lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))

    def status(self, backend: str, server: str) -> str:
        """UP, DOWN, DRAIN, MAINT, or ``UP 1/2``-like transitions."""
        for row in self.stats():
            if row["pxname"] == backend and row["svname"] == server:
                return row["status"]
        raise KeyError(f"{backend}/{server}")

    def wait_status(self, backend: str, server: str, wanted: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (status := self.status(backend, server)) != wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{backend}/{server} is {status}, not {wanted}, after {timeout} s"
                )
            time.sleep(0.1)

    def retries(self) -> dict[str, int]:
        """Per backend: the retries (``wretr``) and redispatches (``wredis``) so far."""
        counts: dict[str, int] = {}
        for row in self.stats():
            if row["svname"] == "BACKEND":
                counts[row["pxname"]] = int(row["wretr"] or 0) + int(row["wredis"] or 0)
        return counts

    def current_sessions(self, backend: str, server: str) -> int:
        for row in self.stats():
            if row["pxname"] == backend and row["svname"] == server:
                return int(row["scur"] or 0)
        raise KeyError(f"{backend}/{server}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
