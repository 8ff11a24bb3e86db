"""Real server processes on 127.0.0.1 (``bentoml serve``, ``mlflow models serve``, MLServer)
for the benchmarks and the tests: start, wait until ready, stop with their workers, crash;
and the memory a server's whole process tree holds."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

BENTOML_CLI = str(Path(sys.executable).parent / "bentoml")
# Called with the program's name before any server starts: the tests set it to refuse a server
# started by a test not marked as a server test (tests/helpers/marks.py).
before_start: Callable[[str], None] | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@dataclass
class Server:
    """A running ``bentoml serve`` process."""

    process: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> None:
        """Graceful stop, then whatever it started that outlived it (BentoML's workers run
        in sessions of their own: found by parentage while the server runs, stopped by id)."""
        import psutil

        if self.process.poll() is not None:
            return
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.process.terminate()  # the arbiter stops its workers itself
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(alive, timeout=10)

    def kill(self) -> None:
        """SIGKILL the server and every descendant: a crash, no graceful shutdown."""
        import psutil

        try:
            family = [psutil.Process(self.process.pid)]
            family += family[0].children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        self.process.wait(30)
        psutil.wait_procs(family, timeout=30)


def start_process(
    cmd: list[str],
    *,
    url: str,
    ready_path: str,
    env: dict[str, str],
    cwd: Path,
    log: Path,
    timeout: float = 180,
) -> Server:
    """Start ``cmd`` (a server that will listen at ``url``), returned once ``ready_path``
    answers 200; stopped again if it never does."""
    if before_start is not None:
        before_start(Path(cmd[0]).name)
    with log.open("ab") as out:
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, url, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited ({process.returncode}):\n{tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}{ready_path}", timeout=2).status_code == 200:
                    return server
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[0]} not ready after {timeout} s:\n{tail(log)}")
            time.sleep(0.5)
    except BaseException:
        server.stop()
        raise


def tree_rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` and all its descendants, in MB (psutil when it is
    installed, else ``/proc``)."""
    try:
        import psutil
    except ImportError:
        return sum(_proc_rss(p) for p in _proc_tree(pid)) / 1024**2
    root = psutil.Process(pid)
    total = 0
    for member in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total / 1024**2


def _proc_tree(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(parents.get(tree[-1], []))
    return tree


def _proc_rss(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def start_server(
    target: str,
    *,
    env: dict[str, str],
    cwd: Path,
    log: Path,
    port: int | None = None,
    timeout: float = 180,
) -> Server:
    """``bentoml serve TARGET`` on 127.0.0.1 (a free port unless given), returned once
    /readyz answers 200."""
    port = port or free_port()
    # One worker unless the caller says: load-shedding budgets, batching counters and
    # /metadata are per worker, and tests read them.
    env = {"TAGSERVE_WORKERS": "1", **env}
    cmd = [BENTOML_CLI, "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    return start_process(
        cmd, url=url, ready_path="/readyz", env=env, cwd=cwd, log=log, timeout=timeout
    )


@contextlib.contextmanager
def serving(target: str, **kw) -> Iterator[Server]:
    """:func:`start_server` for the length of a ``with`` block."""
    server = start_server(target, **kw)
    try:
        yield server
    finally:
        server.stop()
