"""The fast loop's guard (tests.helpers.marks): a test that starts a server without the
``server`` mark fails, and a tool CI installs is never silently missing there."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import marks
from tests.helpers.servers import start_process


def test_a_test_starting_a_server_without_the_mark_fails(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with pytest.raises(pytest.fail.Exception, match="starts sleep but is not marked `server`"):
        start_process(
            ["sleep", "60"], url="http://127.0.0.1:9", ready_path="/", env={}, cwd=tmp_path, log=log
        )
    assert not log.exists()  # refused before anything started


@pytest.mark.server
def test_a_server_test_may_start_one() -> None:
    marks.assert_server_marked("a server")


def test_server_fixtures_mark_every_test_using_them(request: pytest.FixtureRequest) -> None:
    """The tests of this session that use a fixture starting a server carry the mark (and
    this one, using none, does not)."""
    using = [item for item in request.session.items if marks.uses_server_fixture(item)]
    assert all(item.get_closest_marker(marks.SERVER) for item in using)
    assert not marks.uses_server_fixture(request.node)
    assert request.node.get_closest_marker(marks.SERVER) is None


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail), ("", pytest.skip)])
def test_a_missing_tool_fails_under_ci_and_is_skipped_elsewhere(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome
) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(outcome.Exception, match="hey is not installed"):
        marks.tool("hey")
    monkeypatch.setenv("PATH", str(Path("/usr/bin")))
    assert marks.tool("sleep").endswith("/sleep")
