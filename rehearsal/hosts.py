"""The serving hosts' replicas: one real ``bentoml serve <bento>`` per replica, started on its
host's namespace, stopped gracefully (SIGTERM) or lost (SIGKILL of it and its workers)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from rehearsal.balancer import SERVER_PORT

BENTOML = str(Path(sys.executable).parent / "bentoml")


@dataclass
class Replica:
    """A ``bentoml serve`` of ``bento`` on ``host``."""

    host: str
    bento: str
    process: subprocess.Popen
    log: Path

    def family(self) -> list[psutil.Process]:
        """The server and its workers (BentoML starts them in sessions of their own)."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def terminate(self, timeout: float = 90) -> float:
        """SIGTERM, as Kubernetes sends it after preStop: the seconds it took to exit."""
        family = self.family()
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            # `ip netns exec` execs the command: this pid is bentoml serve itself.
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        psutil.wait_procs(family, timeout=10)
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the server and every worker at once: the host is lost."""
        family = self.family()
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        self.process.wait(30)
        psutil.wait_procs(family, timeout=30)


def start_replica(
    command: list[str], host: str, bento: str, bentoml_home: Path, folder: Path
) -> Replica:
    """``bentoml serve bento`` on ``host`` (``command`` runs a program there), one worker.
    The replicas share one BentoML home, as pods sharing a volume would."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BENTOML_", "TAGSERVE_", "PROMETHEUS_"))
    }
    env.update(
        BENTOML_HOME=str(bentoml_home),
        BENTOML_DO_NOT_TRACK="true",
        TAGSERVE_WORKERS="1",
        # Short enough for a rehearsal; the graceful drain still finishes every request.
        TAGSERVE_DRAIN_SECONDS="10",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    log = folder / f"serve-{host}-{bento.replace(':', '-')}-{time.time_ns()}.log"
    cmd = [BENTOML, "serve", bento, "--host", "0.0.0.0", "--port", str(SERVER_PORT)]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, *cmd], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=folder
        )
    return Replica(host, bento, process, log)
