"""The memory of one replica: resident memory of a server's whole process tree (arbiter and
worker for BentoML, every process ``mlflow models serve`` starts, MLServer's) after it has
answered the same number of single-record requests, one worker each, on the same model:
tagserve, ``mlflow models serve -w 1`` and Seldon MLServer with mlserver-mlflow.

MLServer pins its own fastapi, so it lives in a virtualenv of its own,
``.tools/mlserver-venv`` (``benchmarks/mlserver/requirements.txt``); without it MLServer's
row says so and its ratio is not reported. It serves in-process (``parallel_workers: 0``):
its workers would be extra processes, and one process is its leanest replica.
"""

from __future__ import annotations

import json
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
        _measured(scenario, *spec, env=env, log=work / f"memory-{i}.log", requests=requests)
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
) -> Result:
    with server_process(system, cmd, env, ready, port, log) as process:
        result = measure(
            scenario,
            system,
            f"{process.url}{path}",
            json.dumps(body).encode(),
            requests=requests,
            concurrency=CONCURRENCY,
        )
        result.rss_mb = tree_rss_mb(process.process.pid)
    print(f"    {system:<40} RSS {fmt(result.rss_mb, 0)} MB (whole process tree)", flush=True)
    return result


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
