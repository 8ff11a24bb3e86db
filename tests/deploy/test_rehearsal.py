"""``python -m rehearsal --quick`` as ``make test`` runs it: real hosts in network namespaces,
real ``bentoml serve`` replicas behind Debian's HAProxy. The upgrade and the lost replica cost
no client an error, every release tag answers, the control shows errors, and nothing is left
behind, even when the rehearsal is interrupted."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers.service_models import PROJECT_ROOT

pytestmark = [
    pytest.mark.server,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

CLOSING = re.compile(
    r"^rehearsal: (\d+) requests, (\d+) non-2xx, (\d+) transport errors "
    r"\(control: (\d+) errors\) -> (.+)$"
)


def namespaces(pid: int) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.startswith(f"rh{pid}-")]


def leftovers(scratch_prefix: str = "tagserve-rehearsal-") -> list[str]:
    """Processes still running with the rehearsal's scratch folder on their command line."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if scratch_prefix in line and process.pid != os.getpid():
            found.append(line)
    return found


def rehearse(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rehearsal", *args],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_quick_rehearsal_upgrades_and_loses_a_replica_without_an_error(
    tmp_path: Path,
) -> None:
    out = tmp_path / "rehearsal.json"
    process = rehearse("--quick", "--out", str(out))
    stdout, stderr = process.communicate(timeout=1400)
    assert process.returncode == 0, stderr[-3000:]
    closing = CLOSING.match(stdout.strip().splitlines()[-1])
    assert closing, stdout
    requests, non_2xx, transport, control_errors = map(int, closing.groups()[:4])
    assert Path(closing[5]) == out
    report = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert requests == report["rehearsal"]["requests"] > 1_000
    failed = {
        "answers": report["failures"]["rehearsal"],
        "haproxy": report["haproxy_abnormal"]["rehearsal"]["failed"],
        "events": report["events"],
    }
    assert (non_2xx, transport) == (0, 0), json.dumps(failed, indent=1)
    releases = set(report["releases"].values())
    assert len(releases) == 3  # two diamonds release tags and one penguins
    assert set(report["rehearsal"]["tags_seen"]) == releases
    by_phase = {phase["name"]: phase for phase in report["phases"]}
    assert by_phase["upgrade"]["requests"] and by_phase["kill"]["requests"]
    assert by_phase["kill"]["by_model"]["penguins"]["2xx"] > 0  # penguins throughout
    assert control_errors > 0, report["control"]
    assert control_errors == (report["control"]["non_2xx"] + report["control"]["transport_errors"])
    assert namespaces(process.pid) == []
    assert leftovers() == []


def test_an_interrupted_rehearsal_leaves_nothing_behind(tmp_path: Path) -> None:
    process = rehearse("--quick", "--out", str(tmp_path / "rehearsal.json"))
    try:
        deadline = time.monotonic() + 600
        while len(namespaces(process.pid)) < 3:  # the hosts exist: the set-up is under way
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the rehearsal made no hosts in 600 s"
            time.sleep(0.5)
        time.sleep(5)  # replicas starting
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    assert stderr.strip().splitlines()[-1].startswith("error: rehearsal stopped: SIGTERM")
    assert namespaces(process.pid) == []
    assert leftovers() == []
    assert not (tmp_path / "rehearsal.json").exists()
