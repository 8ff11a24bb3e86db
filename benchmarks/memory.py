"""The memory of one replica: resident memory of a server's whole process tree (arbiter and
worker for BentoML, every process ``mlflow models serve`` starts, MLServer's) after it has
answered the same number of single-record requests, one worker each, on the same model:
tagserve, ``mlflow models serve -w 1`` and Seldon MLServer with mlserver-mlflow.

MLServer pins its own fastapi, so it lives in a virtualenv of its own,
``.tools/mlserver-venv`` (``benchmarks/mlserver/requirements.txt``); without it MLServer's
row says so and its ratio is not reported. It serves in-process (``parallel_workers: 0``):
its workers would be extra processes, and one process is its leanest replica.

A replica that has served for a while has run its live monitoring's tests too (the leader
holds what testing needs), so tagserve's RSS is its steady state: after the requests it waits
(at most ``MONITOR_WAIT_S``) until ``GET /monitoring`` shows a test that ran after the last
request, then measures. ``TAGSERVE_MONITOR_EVERY`` (``MONITOR_EVERY_S``) makes that test come
within seconds instead of the default cycle's 30; the window and ``TAGSERVE_MONITOR_MIN_ROWS``
keep their defaults, so the requests are enough to be tested. The row's note says how many rows
the test covered, or that monitoring never ran and why.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.servers import free_port, tree_rss_mb
from benchmarks.serving import (
    MEMORY,
    MLFLOW_SERVE,
    MLSERVER,
    PROJECT_ROOT,
    TAGSERVE,
    VENV_BIN,
    Result,
    Setup,
    fmt,
    measure,
    server_process,
)

MLSERVER_BIN = PROJECT_ROOT / ".tools" / "mlserver-venv" / "bin" / "mlserver"
MODEL_NAME = "tagserve"
CONCURRENCY = 4  # clients sending the requests
MONITOR_EVERY_S = 2  # tagserve's monitoring cycle here: its first test within seconds
MONITOR_WAIT_S = 30.0  # the longest wait for a test after the requests


def replica_memory(setup: Setup, requests: int) -> list[Result]:
    """Each server alone: ``requests`` single records, then the RSS of its process tree."""
    from clients.service import SERVICE_TARGET
    from inference.constants import MLFLOW_TRUST_SWITCH

    scenario = f"{MEMORY} {requests:,} requests"
    print(f"memory of one replica after {requests:,} requests", flush=True)
    record = json.loads(setup.bodies.record)  # what /predict gets in every scenario
    env = {**setup.env, "TAGSERVE_WORKERS": "1", MLFLOW_TRUST_SWITCH: "true"}
    work = setup.work
    port = free_port()
    tagserve_env = {**env, "TAGSERVE_MONITOR_EVERY": str(MONITOR_EVERY_S)}
    servers = [
        (
            TAGSERVE,
            [str(VENV_BIN / "bentoml"), "serve", SERVICE_TARGET, "--host", "127.0.0.1"]
            + ["--port", str(port)],
            "/readyz",
            port,
            "/predict",
            record,
        ),
    ]
    port = free_port()
    servers.append(
        (
            MLFLOW_SERVE,
            [str(VENV_BIN / "mlflow"), "models", "serve", "-m", str(setup.model_dir)]
            + ["--env-manager", "local", "-w", "1", "-h", "127.0.0.1", "-p", str(port)],
            "/ping",
            port,
            "/invocations",
            {"dataframe_records": [record]},
        )
    )
    results = [
        _measured(
            scenario,
            *spec,
            env=tagserve_env if spec[0] == TAGSERVE else env,
            log=work / f"memory-{i}.log",
            requests=requests,
            settle=monitoring_tested if spec[0] == TAGSERVE else None,
        )
        for i, spec in enumerate(servers)
    ]
    results.append(_mlserver(scenario, setup, record, env, requests))
    return results


def _measured(
    scenario: str,
    system: str,
    cmd: list[str],
    ready: str,
    port: int,
    path: str,
    body: Any,
    *,
    env: dict[str, str],
    log: Path,
    requests: int,
    settle: Callable[[str, float], str] | None = None,
) -> Result:
    """``requests`` to ``path``, then (``settle``: what the server still does once they are
    answered, given its URL and when the load ended; it returns the row's note) the RSS."""
    with server_process(system, cmd, env, ready, port, log) as process:
        result = measure(
            scenario,
            system,
            f"{process.url}{path}",
            json.dumps(body).encode(),
            requests=requests,
            concurrency=CONCURRENCY,
        )
        if settle is not None:
            result.note = settle(process.url, time.time())
            print(f"    {system:<40} {result.note}", flush=True)
        result.rss_mb = tree_rss_mb(process.process.pid)
    print(f"    {system:<40} RSS {fmt(result.rss_mb, 0)} MB (whole process tree)", flush=True)
    return result


def monitoring_tested(url: str, since: float) -> str:
    """Wait (at most ``MONITOR_WAIT_S``) until tagserve's monitoring has tested its window
    after ``since`` (a Unix time): what a replica holds once it has run its tests. Returns
    what happened, for the row's note."""
    deadline = time.monotonic() + MONITOR_WAIT_S
    status: dict[str, Any] = {}
    while True:
        try:
            with urllib.request.urlopen(f"{url}/monitoring", timeout=5) as answer:
                status = json.loads(answer.read())
        except (OSError, ValueError) as exc:
            status = {"reason": f"GET /monitoring failed: {exc}"}
        if not status.get("enabled", True):
            return f"monitoring never ran: {status.get('reason', 'off')}"
        evaluated = status.get("evaluated_at")
        if evaluated and datetime.fromisoformat(evaluated).timestamp() >= since:
            rows = (status.get("window") or {}).get("rows")
            tested = "tested" if status.get("tested") else "not tested (too few rows)"
            return f"after monitoring's test ({rows} rows, {tested})"
        if time.monotonic() >= deadline:
            why = status.get("reason") or "no test after the requests"
            return f"monitoring never ran within {MONITOR_WAIT_S:g} s: {why}"
        time.sleep(0.5)


def _mlserver(
    scenario: str, setup: Setup, record: dict[str, Any], env: dict[str, str], requests: int
) -> Result:
    if not MLSERVER_BIN.is_file():
        note = f"skipped: MLServer is not installed ({MLSERVER_BIN.parent.parent} missing)"
        print(f"    {MLSERVER:<40} {note}", flush=True)
        return Result(scenario, MLSERVER, note=note)
    port = free_port()
    folder = mlserver_folder(setup.work / "mlserver", setup.model_dir, port)
    cmd = [str(MLSERVER_BIN), "start", str(folder)]
    env = {**env, "PATH": f"{MLSERVER_BIN.parent}:{env.get('PATH', '')}"}
    body = v2_request(record, {c.name: c.type for c in setup.model.contract.columns})
    return _measured(
        scenario,
        MLSERVER,
        cmd,
        "/v2/health/ready",
        port,
        f"/v2/models/{MODEL_NAME}/infer",
        body,
        env=env,
        log=setup.work / "memory-mlserver.log",
        requests=requests,
    )


def mlserver_folder(folder: Path, model_dir: Path, port: int) -> Path:
    """MLServer's settings (its ports; in-process) and the model's (mlserver-mlflow's runtime
    on the MLflow model files) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": 0,
    }
    model = {
        "name": MODEL_NAME,
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": str(model_dir)},
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=1))
    (folder / "model-settings.json").write_text(json.dumps(model, indent=1))
    return folder


V2_TYPES = {"double": "FP64", "float": "FP32", "long": "INT64", "integer": "INT32"}


def v2_request(record: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    """One record as a V2 inference request of named columns, decoded as a pandas frame."""
    inputs = [
        {
            "name": name,
            "shape": [1],
            "datatype": V2_TYPES.get(types[name], "BOOL" if types[name] == "boolean" else "BYTES"),
            "data": [value],
        }
        for name, value in record.items()
    ]
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}
