"""The fast loop and its guard: which tests start a server, and the check that they say so.

A test is a *server* test when it starts a process the fast loop leaves out (``make
test-fast``: ``pytest -m "not server and not slow"``, ``slow`` being the whole pipeline run in
subprocesses): ``bentoml serve`` or ``mlflow models serve``, a JVM (Spark), a container
(buildah), a browser (chromium), Prometheus or hey. tests/conftest.py marks such a test
``server`` when it uses a fixture decorated with :func:`starts_server`; a module of
server tests only says ``pytestmark = pytest.mark.server``. The helpers that start those
processes call :func:`assert_server_marked`, so a test that starts one unmarked fails, naming
the mark, instead of silently slowing the fast loop.

The tools come from the system (Debian packages that ``.ci/run`` installs): :func:`tool`
skips a test whose tool is missing on a developer's machine, but fails it under CI, where a
missing tool means a failed install, never a reason to pass.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import TypeVar

import pytest

SERVER = "server"  # declared in pyproject.toml's pytest markers

F = TypeVar("F", bound=Callable)

# The test pytest is running (set by tests/conftest.py for its setup, call and teardown).
current: pytest.Item | None = None


def starts_server(fixture_function: F) -> F:
    """Mark a fixture function (below ``@pytest.fixture``) as one that starts a server: every
    test using it, directly or through other fixtures, is marked ``server``."""
    fixture_function.starts_server = True  # type: ignore[attr-defined]
    return fixture_function


def uses_server_fixture(item: pytest.Item) -> bool:
    """Whether ``item`` needs a fixture decorated with :func:`starts_server`."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        getattr(definition.func, "starts_server", False)
        for name in info.names_closure
        for definition in info.name2fixturedefs.get(name, ())
    )


def assert_server_marked(what: str) -> None:
    """Fail the current test unless it is marked ``server``: it is about to start ``what``."""
    if current is not None and current.get_closest_marker(SERVER) is None:
        pytest.fail(
            f"{current.nodeid} starts {what} but is not marked `{SERVER}`: use a fixture "
            f"decorated with tests.helpers.marks.starts_server, or mark it "
            f"@pytest.mark.{SERVER} (pytestmark for a module of server tests)",
            pytrace=False,
        )


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(what: str, install: str) -> None:
    """A test cannot run without ``what``: a failure under CI (CI=true, as .ci/run sets, which
    installs it), elsewhere a skip saying how to install it."""
    reason = f"{what} is not installed ({install}; .ci/run installs it)"
    if in_ci():
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


def tool(name: str, install: str | None = None) -> str:
    """The path of the system tool ``name``; :func:`missing` when it is not on PATH."""
    path = shutil.which(name)
    if path is None:
        missing(name, install or f"apt-get install -y {name}")
    return path
