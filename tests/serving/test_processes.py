"""What each process of a replica imports: ``bentoml serve`` (the arbiter) only what defining
the service needs; a worker only what its model's engine needs. Each runs in a fresh
interpreter (a subprocess), on the session's imported models."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers.service_models import PYTHON, Models, records, subprocess_env

HEAVY = ("numba", "llvmlite", "scipy", "scipy.stats", "pandas", "pyarrow", "sklearn", "skops")

ARBITER = """
import json, sys
import service
service.Tagserve
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""

# A worker's start as BentoML runs it (service.Tagserve's __init__), then an answer: what the
# fast path needs is imported by then, and nothing else.
WORKER = """
import json, sys
import bentoml
import service
from serving.startup import start_worker
plan = service.Tagserve.inner.plan
state = start_worker(plan, bentoml.models.get(plan.model_tag), None)
state.monitor.stop()
row = json.loads(sys.argv[1])
state.models.predict_records([row])
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def imported(models: Models, tag: str, program: str, *args: str) -> list[str]:
    env = subprocess_env(models, TAGSERVE_MODEL=tag, TAGSERVE_MONITOR="off")
    done = subprocess.run(
        [PYTHON, "-c", program.format(heavy=HEAVY), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("which", ["regressor", "classifier"])
def test_the_arbiter_imports_no_model_library(models: Models, which: str) -> None:
    """``bentoml serve`` imports service.py to read the service's definition (its record
    types, APIs and document): no numerical library beyond numpy, no model library."""
    assert imported(models, getattr(models, which), ARBITER) == []


def test_a_fast_path_worker_imports_neither_sklearn_nor_scipy(models: Models) -> None:
    """A worker whose model the fast path serves loads neither scikit-learn nor scipy (it
    answers through its compiled forest, numba and pandas)."""
    row = records(models.example(models.regressor))[0]
    held = imported(models, models.regressor, WORKER, json.dumps(row))
    assert "numba" in held  # the engine it serves with: the check is not vacuous
    assert not {"sklearn", "skops", "scipy.stats"} & set(held), held
