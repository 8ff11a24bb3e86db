"""What each process of a replica imports: ``bentoml serve`` (the arbiter) only what defining
the service needs; a worker only what its model's engine needs. Each runs in a fresh
interpreter (a subprocess), on the session's imported models."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers.monitoring import FEATURES, MonitoredModel
from tests.helpers.service_models import PYTHON, Models, records, subprocess_env

HEAVY = ("numba", "llvmlite", "scipy", "scipy.stats", "pandas", "pyarrow", "sklearn", "skops")

ARBITER = """
import json, sys
import service
service.Tagserve
print(json.dumps(sorted(m for m in {heavy!r} if sys.modules.get(m) is not None)))
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
print(json.dumps(sorted(m for m in {heavy!r} if sys.modules.get(m) is not None)))
"""


# A worker's start, then a Parquet file read through pandas.
PARQUET = """
import json, sys
import bentoml
import service
from serving.startup import start_worker
plan = service.Tagserve.inner.plan
state = start_worker(plan, bentoml.models.get(plan.model_tag), None)
state.monitor.stop()
import pandas
try:
    pandas.read_parquet(sys.argv[1])
except ImportError as exc:
    print(json.dumps(str(exc)))
"""

# A worker that leads the monitoring: its rows recorded, then one cycle run here (the thread's
# work) until it has tested them.
LEADER = """
import json, sys
import bentoml
import service
from serving.startup import start_worker
plan = service.Tagserve.inner.plan
state = start_worker(plan, bentoml.models.get(plan.model_tag), None)
monitor = state.monitor
monitor.stop()
rows = json.loads(sys.argv[1])
monitor.record(rows, state.models.predict_records(rows))
monitor.collect()
monitor.cycle()
status = monitor.status()
assert status.get("tested"), status
print(json.dumps(sorted(m for m in {heavy!r} if sys.modules.get(m) is not None)))
"""


# A worker's start, then a 10,000-record body read as /invocations reads it: the collector's
# young-generation collections while it is read.
COLLECTIONS = """
import gc, json, sys
import bentoml, orjson
import service
from serving.protocol import parse_invocation
from serving.startup import start_worker
plan = service.Tagserve.inner.plan
state = start_worker(plan, bentoml.models.get(plan.model_tag), None)
state.monitor.stop()
body = orjson.dumps({{"dataframe_records": [json.loads(sys.argv[1])] * 10_000}})
started = []
gc.callbacks.append(lambda phase, info: phase == "start" and started.append(info["generation"]))
assert len(parse_invocation(body, "application/json", state.contract)) == 10_000
print(json.dumps(started))
"""


def imported(models: Models, tag: str, program: str, *args: str, **env_extra: str) -> list[str]:
    env = subprocess_env(models, TAGSERVE_MODEL=tag, **{"TAGSERVE_MONITOR": "off", **env_extra})
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
    """A worker whose model the fast path serves loads neither scikit-learn nor scipy.stats
    nor pyarrow (it answers through its compiled forest, numba and pandas)."""
    row = records(models.example(models.regressor))[0]
    held = imported(models, models.regressor, WORKER, json.dumps(row))
    assert "numba" in held  # the engine it serves with: the check is not vacuous
    assert not {"sklearn", "skops", "scipy.stats", "pyarrow"} & set(held), held


def test_a_worker_runs_pandas_as_if_pyarrow_were_not_installed(
    models: Models, tmp_path: Path
) -> None:
    """pandas in a worker runs without Arrow (its libraries would stay resident in every
    replica, unused): what would need it fails with pandas' own clear message."""
    path = tmp_path / "rows.parquet"
    pd.DataFrame({"a": [1.5, 2.5]}).to_parquet(path)
    said = imported(models, models.regressor, PARQUET, str(path))
    assert "pyarrow" in said and "Missing optional dependency" in said, said


def test_a_monitoring_leader_tests_without_scipy_stats(
    monitored: MonitoredModel, tmp_path: Path
) -> None:
    """The worker that leads the monitoring and has tested its window (a model imported
    with its drift reference) holds neither scipy.stats (most of SciPy) nor pyarrow."""
    rows = monitored.train[list(FEATURES)].head(50).to_json(orient="records")
    held = imported(
        monitored,  # type: ignore[arg-type]  (the homes are all it reads)
        monitored.tag,
        LEADER,
        rows,
        TAGSERVE_MONITOR="on",
        TAGSERVE_WORKERS="1",
        TAGSERVE_MONITOR_MIN_ROWS="1",
        TAGSERVE_MONITOR_DIR=str(tmp_path),
    )
    assert "numba" in held
    assert not {"sklearn", "scipy.stats", "pyarrow"} & set(held), held


def test_a_worker_reads_a_large_body_without_a_collection(models: Models) -> None:
    """A body's rows are tracked containers that live until the request ends: a worker lets
    the young generation hold a 10,000-row body (at CPython's default it was walked many
    times over while it was read)."""
    row = records(models.example(models.regressor))[0]
    assert imported(models, models.regressor, COLLECTIONS, json.dumps(row)) == []
