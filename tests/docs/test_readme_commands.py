"""Every command of README.md, of the getting-started page and of the serving page's quick start
runs as written after `make demo`, against the project's own stores (`.tagserve/`, BentoML's),
in a shell like a new user's (no `.venv/bin` on PATH, no `TAGSERVE_*` or `BENTOML_*` set), and
prints the output the page shows (`…` stands for what changes from run to run).

A server command (`make serve …`) runs in the background until the commands after it are done,
then gets SIGTERM (its graceful drain). `make demo` and `make test` are not run: the first made
the stores these commands read (CI runs it before the tests), the second is the suite this test
is part of."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from tests.helpers.docs import DOCS, Command, normalised, shell_commands, shown_pattern
from tests.helpers.project import PROJECT_ROOT, VENV_BIN

PAGES = [
    (PROJECT_ROOT / "README.md", None),
    (DOCS / "getting-started.md", None),
    (DOCS / "serving.md", "Quick start"),
]
NOT_RUN = {
    "make demo": "made the stores the other commands read (CI runs it before the tests)",
    "make test": "the test suite this test is part of",
}
SERVER = re.compile(r"^make serve\b")
START_SECONDS, BLOCK_SECONDS, STOP_SECONDS = 240, 300, 60
MARK = "@@tagserve-docs-command@@"

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not (PROJECT_ROOT / ".tagserve" / "store").is_dir(),
        reason="no `make demo` store in .tagserve/: the README's commands run after make demo "
        "(CI runs it before the tests)",
    ),
]


def user_env() -> dict[str, str]:
    """A new user's shell: the project's venv not on PATH, none of the project's settings.
    Inside `make test`, make's own flags (its jobserver) are make's, not the user's."""
    drop = ("TAGSERVE_", "BENTOML_", "VIRTUAL_ENV", "UV_", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    if "MAKELEVEL" in env:
        for name in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"):
            env.pop(name, None)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != VENV_BIN]
    env["PATH"] = os.pathsep.join(path)
    return env


def blocks() -> list[list[Command]]:
    """The pages' commands, grouped by the code block they share a shell in."""
    grouped: dict[tuple[str, int], list[Command]] = {}
    for page, heading in PAGES:
        for command in shell_commands(page, heading):
            grouped.setdefault((command.source, command.block), []).append(command)
    return list(grouped.values())


def port_of(command: str) -> int:
    match = re.search(r"\bPORT=(\d+)", command)
    return int(match.group(1)) if match else 3000


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def served(command: Command, env: dict[str, str], log: Path) -> Iterator[None]:
    """``command`` (a `make serve`) in the background, in a process group of its own, until
    its /readyz answers; SIGTERM to the group afterwards."""
    port = port_of(command.command)
    assert not port_taken(port), f"port {port} is taken: `{command.command}` needs it free"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["bash", "-c", command.command],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_SECONDS
        while not ready(port):
            assert process.poll() is None, f"`{command.command}` ended: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"`{command.command}` not ready: {log.read_text()}"
            time.sleep(1)
        yield
    finally:
        stop(process)


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def stop(process: subprocess.Popen) -> None:
    with suppress(ProcessLookupError):  # already ended
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_SECONDS)


def run_block(commands: list[Command], env: dict[str, str]) -> list[tuple[Command, str, int]]:
    """The block's commands in one bash (so `source` and variables carry over, as in the
    user's shell): each command's stdout and exit status."""
    script = []
    for i, command in enumerate(commands):
        script += [f"printf '\\n{MARK} {i}\\n'", command.command, f"printf '\\n{MARK} rc %d\\n' $?"]
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_SECONDS,
    )
    parts = re.split(rf"\n{MARK} (\d+|rc \d+)\n", "\n" + done.stdout)
    results, output = [], {}
    for marker, text in zip(parts[1::2], parts[2::2], strict=True):
        if marker.startswith("rc "):
            i = len(results)
            results.append((commands[i], output.get(i, ""), int(marker[3:])))
        else:
            output[int(marker)] = text
    assert len(results) == len(commands), f"the block stopped early: {done.stderr[-3000:]}"
    return results


def check(command: Command, stdout: str, status: int) -> None:
    where = f"{command.source}: `{command.command}`"
    assert status == 0, f"{where} exited {status}; printed {stdout!r}"
    if command.shown:
        expected = shown_pattern(command.shown)
        assert expected.fullmatch(normalised(stdout)), (
            f"{where} printed {normalised(stdout)!r}, the page shows {command.shown!r}"
        )


def test_the_pages_commands_run_as_written(tmp_path: Path):
    env = user_env()
    todo = blocks()
    assert any(SERVER.match(c.command) for block in todo for c in block)  # the parse works
    with ExitStack() as servers:
        started: set[int] = set()
        for block in todo:
            runnable = [c for c in block if c.command not in NOT_RUN]
            server = [c for c in runnable if SERVER.match(c.command)]
            if server:
                assert len(runnable) == 1, f"a server command stands alone in its block: {block}"
                port = port_of(server[0].command)
                if port not in started:  # a later page's same quick start uses the one running
                    servers.enter_context(served(server[0], env, tmp_path / f"serve-{port}.log"))
                    started.add(port)
                continue
            for command, stdout, status in run_block(runnable, env) if runnable else []:
                check(command, stdout, status)
