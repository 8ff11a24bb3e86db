"""schemathesis (the CLI of the dev dependency) against a served OpenAPI document."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.project import VENV_BIN

SCHEMATHESIS = str(VENV_BIN / "schemathesis")
SEED = 20261124


@dataclass(frozen=True)
class SpecRun:
    returncode: int
    tested: int | None  # operations tested
    summary: str  # from the first failure (each has a curl line), and the end of stderr


def run_schemathesis(url: str, workdir: Path, examples: int) -> SpecRun:
    """Every check schemathesis has (examples, coverage probes, fuzzing, positive and
    negative; a fixed seed) on every operation of ``url``'s ``/docs.json``."""
    cmd = [
        SCHEMATHESIS,
        "run",
        f"{url}/docs.json",
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(examples),
        "--workers",
        "1",
        "--no-shrink",  # a failure is reported with its curl line; shrinking costs minutes
        "--request-timeout",
        "30",
    ]
    # cwd: schemathesis keeps its hypothesis database in the working directory
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900)
    failures = done.stdout.find("FAILURES")
    summary = done.stdout[max(failures, 0) :][:12000] + done.stderr[-2000:]
    tested = re.search(r"Tested: +(\d+)", done.stdout)
    return SpecRun(done.returncode, int(tested.group(1)) if tested else None, summary)
