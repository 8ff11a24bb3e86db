"""Step 3, check_data: run the data tests with pytest on `clean_data`.

The drift test compares the sample with the `clean_data:reference` alias; the first run with
no reference passes it and sets the alias. A failing test stops the pipeline with a report
naming each failed check and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from artifacts.store import ArtifactNotFound
from pipeline.errors import PipelineError
from pipeline.tracking import StepContext

CHECKS_DIR = Path(__file__).parent / "checks"


class _DataFixtures:
    """pytest plugin giving the data tests their frames and settings, and collecting failures."""

    def __init__(self, sample: pd.DataFrame, reference: pd.DataFrame | None, checks: dict):
        self._sample, self._reference, self._checks = sample, reference, checks
        self.failures: list[str] = []
        self.passed: list[str] = []

    @pytest.fixture
    def sample(self) -> pd.DataFrame:
        return self._sample

    @pytest.fixture
    def reference(self) -> pd.DataFrame | None:
        return self._reference

    @pytest.fixture
    def checks(self) -> dict:
        return self._checks

    def pytest_runtest_logreport(self, report: Any) -> None:
        name = report.nodeid.split("::")[-1].removeprefix("test_")
        if report.failed:
            message = (
                report.longrepr.reprcrash.message
                if hasattr(report.longrepr, "reprcrash")
                else str(report.longrepr)
            )
            self.failures.append(
                f"{name}: {message.splitlines()[0].removeprefix('AssertionError: ')}"
            )
        elif report.when == "call" and report.passed:
            self.passed.append(name)


def run_checks(
    sample: pd.DataFrame, reference: pd.DataFrame | None, checks: dict
) -> tuple[list[str], list[str]]:
    """Run the data tests with pytest.

    Returns:
        (names of the passed checks, ``"check: why"`` for each failed one).
    """
    plugin = _DataFixtures(sample, reference, checks)
    args = [
        str(CHECKS_DIR),
        "-c",
        str(CHECKS_DIR / "pytest.ini"),
        "--rootdir",
        str(CHECKS_DIR),
        "-p",
        "no:terminal",
        "-W",
        "ignore",
    ]
    code = pytest.main(args, plugins=[plugin])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED) and not plugin.failures:
        raise PipelineError(f"the data tests could not run (pytest exit code {int(code)})")
    return plugin.passed, plugin.failures


def run(ctx: StepContext) -> None:
    from omegaconf import OmegaConf

    clean = ctx.use(ctx.input_ref("clean_data"))
    sample = pd.read_parquet(clean.file())
    checks = OmegaConf.to_container(ctx.cfg.checks, resolve=True)
    reference_ref = checks["drift"]["reference"]
    try:
        reference_version = ctx.use(reference_ref)
        reference = pd.read_parquet(reference_version.file())
    except ArtifactNotFound:
        reference_version, reference = None, None
    passed, failures = run_checks(sample, reference, checks)
    ctx.log_metrics({"check_data/passed": len(passed), "check_data/failed": len(failures)})
    if failures:
        raise PipelineError(
            f"check_data: {len(failures)} check(s) failed on {clean.qualified_name}: "
            + " | ".join(failures)
        )
    note = (
        f"drift vs {reference_version.qualified_name}" if reference_version else "no reference yet"
    )
    if reference_version is None:
        alias = reference_ref.partition(":")[2] or "reference"
        ctx.store.set_alias(clean.qualified_name, alias)
        note += f", {clean.qualified_name} set as {alias}"
    rows = f"{len(sample)} rows"
    print(f"check_data: {len(passed)} checks passed on {clean.qualified_name} ({rows}, {note})")
