"""The Open Inference Protocol (KServe V2 REST) side by side with Seldon MLServer:
``python -m benchmarks.v2``.

In one run, on the same MLflow model files (the imported prod model) and the same distinct
real rows, each server started alone on 127.0.0.1 and stopped before the next starts, HTTP
load from ``hey`` (``benchmarks.hey``):

1. tagserve (``bentoml serve service:Tagserve``, one worker): V2 infer in JSON and in the
   binary tensor extension (the body ``tritonclient.http`` builds);
2. MLServer 1.7.1 with mlserver-mlflow, in its own virtualenv
   (``benchmarks/mlserver/requirements.txt``; ``make bench`` builds it in
   ``.tools/mlserver-venv``, ``--mlserver-python`` names another), inference in-process
   (``parallel_workers`` 0), V2 infer in JSON (it has no binary extension: one binary request
   is sent to record its answer).

Loads: one record at concurrency 1 (p50), one record from 32 clients (rows/s), 1,000-row
requests at concurrency 2 (rows/s); each ``--rounds`` times (tagserve's JSON and binary
alternating), the median round kept. The ratios the targets name are in the table. Results go
to ``benchmarks/results/v2.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from benchmarks.memory import MODEL_NAME, mlserver_folder
from benchmarks.serving import (
    C1,
    C32,
    PROJECT_ROOT,
    ROWS_1000,
    BenchmarkError,
    Counts,
    Target,
    bentoml_server,
    common_arguments,
    evaluate,
    fmt,
    free_port,
    hey_path,
    machine,
    measure,
    met_text,
    no_errors_check,
    prepare,
    ratio_text,
    run_and_save,
    server,
)

MLSERVER_PYTHON = PROJECT_ROOT / ".tools" / "mlserver-venv" / "bin" / "python"
TAGSERVE_JSON = "tagserve V2, JSON"
TAGSERVE_BINARY = "tagserve V2, binary"
MLSERVER_JSON = "MLServer V2, JSON"

TARGETS = (
    Target(
        "c=1 p50, MLServer / tagserve JSON",
        "p50_ms",
        (C1, MLSERVER_JSON),
        (C1, TAGSERVE_JSON),
        at_least=4,
    ),
    Target(
        "c=1 p50, MLServer / tagserve binary",
        "p50_ms",
        (C1, MLSERVER_JSON),
        (C1, TAGSERVE_BINARY),
        at_least=4,
    ),
    Target(
        "32 clients rows/s, tagserve JSON / MLServer",
        "rows_per_s",
        (C32, TAGSERVE_JSON),
        (C32, MLSERVER_JSON),
    ),
    Target(
        "1,000-row rows/s, tagserve JSON / MLServer",
        "rows_per_s",
        (ROWS_1000, TAGSERVE_JSON),
        (ROWS_1000, MLSERVER_JSON),
        at_least=3,
    ),
    Target(
        "1,000-row rows/s, tagserve binary / MLServer",
        "rows_per_s",
        (ROWS_1000, TAGSERVE_BINARY),
        (ROWS_1000, MLSERVER_JSON),
        at_least=3,
    ),
    Target(
        "c=1 p50, JSON / binary", "p50_ms", (C1, TAGSERVE_JSON), (C1, TAGSERVE_BINARY), at_least=1
    ),
    Target(
        "32 clients rows/s, binary / JSON",
        "rows_per_s",
        (C32, TAGSERVE_BINARY),
        (C32, TAGSERVE_JSON),
        at_least=1,
    ),
    Target(
        "1,000-row rows/s, binary / JSON",
        "rows_per_s",
        (ROWS_1000, TAGSERVE_BINARY),
        (ROWS_1000, TAGSERVE_JSON),
        at_least=1,
    ),
)


def json_body(frame: pd.DataFrame) -> bytes:
    """The rows as a V2 JSON request, as MLServer's PandasCodec writes one (a tensor per
    column, shape [n, 1], text as BYTES strings, missing values null)."""
    inputs = []
    for name in frame.columns:
        column = frame[name]
        text = column.dtype == object
        datatype = "BYTES" if text else "INT64" if column.dtype.kind == "i" else "FP64"
        data = [None if pd.isna(v) else v for v in column.tolist()]
        tensor = {"name": name, "shape": [len(column), 1], "datatype": datatype, "data": data}
        if text:
            tensor["parameters"] = {"content_type": "str"}
        inputs.append(tensor)
    return json.dumps({"parameters": {"content_type": "pd"}, "inputs": inputs}).encode()


def binary_body(frame: pd.DataFrame) -> tuple[bytes, dict[str, str]]:
    """The rows as ``tritonclient.http`` sends them by default (binary tensors, binary
    outputs asked for), and the header giving the JSON part's length."""
    import tritonclient.http as triton

    tensors = []
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object:
            values = np.array([str(v).encode() for v in column], dtype=np.object_)
            datatype = "BYTES"
        else:
            values = column.to_numpy(dtype=np.float64)
            datatype = "FP64"
        tensor = triton.InferInput(name, [len(values), 1], datatype)
        tensor.set_data_from_numpy(values.reshape(-1, 1), binary_data=True)
        tensors.append(tensor)
    body, json_size = triton.InferenceServerClient.generate_request_body(tensors)
    return body, {"Inference-Header-Content-Length": str(json_size)}


# Each load's measure: the round whose value is the median is kept.
METRICS = {C1: "p50_ms", C32: "rows_per_s", ROWS_1000: "rows_per_s"}


def loads(
    url: str, systems: dict[str, dict[int, tuple[bytes, dict]]], counts: Counts, rounds: int
) -> list[Any]:
    """The three loads on ``url`` (an infer path) with each system's bodies (1 and 1,000
    rows), the systems alternating within each round (a slower spell of the shared machine
    then falls on both), ``rounds`` rounds: the median round of each."""
    plans = {
        C1: {"requests": counts.single, "concurrency": 1, "size": 1},
        C32: {"requests": counts.clients_32, "concurrency": 32, "size": 1},
        ROWS_1000: {"requests": counts.rows_1000, "concurrency": 2, "size": 1000},
    }
    results = []
    for scenario, plan in plans.items():
        runs: dict[str, list[Any]] = {system: [] for system in systems}
        for _ in range(rounds):
            for system, bodies in systems.items():
                body, headers = bodies[plan["size"]]
                runs[system].append(
                    measure(
                        scenario,
                        system,
                        url,
                        body,
                        requests=plan["requests"],
                        concurrency=plan["concurrency"],
                        rows_per_request=plan["size"],
                        headers=headers,
                    )
                )
        for measured in runs.values():
            ranked = sorted(measured, key=lambda r: getattr(r, METRICS[scenario]) or 0.0)
            results.append(ranked[len(ranked) // 2])
    return results


def tagserve_v2(
    setup: Any, counts: Counts, frames: dict[int, pd.DataFrame], rounds: int
) -> list[Any]:
    from clients.service import SERVICE_TARGET

    print(f"tagserve: bentoml serve {SERVICE_TARGET} ({setup.workers} worker)", flush=True)
    name = setup.tag.split(":")[0]
    binary_type = {"Content-Type": "application/octet-stream"}
    systems = {
        TAGSERVE_JSON: {n: (json_body(f), {}) for n, f in frames.items()},
        TAGSERVE_BINARY: {
            n: (body, {**headers, **binary_type})
            for n, (body, headers) in ((n, binary_body(f)) for n, f in frames.items())
        },
    }
    with bentoml_server(SERVICE_TARGET, setup.env, setup.work / "tagserve-v2.log") as url:
        return loads(f"{url}/v2/models/{name}/infer", systems, counts, rounds)


def mlserver_v2(
    setup: Any, counts: Counts, frames: dict[int, pd.DataFrame], python: Path, rounds: int
) -> tuple[list[Any], dict[str, Any]]:
    from inference.constants import MLFLOW_TRUST_SWITCH

    if not python.exists():
        raise BenchmarkError(
            f"no MLServer at {python}: make bench builds it (benchmarks/mlserver/requirements.txt)"
        )
    port = free_port()
    folder = mlserver_folder(setup.work / "mlserver", setup.model_dir, port)
    env = {**setup.env, MLFLOW_TRUST_SWITCH: "true"}
    cmd = [str(python.parent / "mlserver"), "start", str(folder)]
    print("MLServer 1.7.1 (mlserver-mlflow, in-process)", flush=True)
    ready = f"/v2/models/{MODEL_NAME}/ready"
    log = setup.work / "mlserver.log"
    with server("mlserver", cmd, env, ready, port, log) as url:
        infer = f"{url}/v2/models/{MODEL_NAME}/infer"
        bodies = {n: (json_body(f), {}) for n, f in frames.items()}
        results = loads(infer, {MLSERVER_JSON: bodies}, counts, rounds)
        body, headers = binary_body(frames[1])
        refused = httpx.post(infer, content=body, headers=headers, timeout=30)
    binary = {"status": refused.status_code, "body": refused.text[:300]}
    return results, binary


def run(args: argparse.Namespace) -> dict[str, Any]:
    hey_path()
    machine_info = machine()
    counts = Counts().scaled(0.2) if args.quick else Counts()
    setup = prepare(args.source, args.home)
    try:
        frames = {1: setup.X.head(1), 1000: setup.X.head(1000)}
        results = tagserve_v2(setup, counts, frames, args.rounds)
        mlserver, binary = mlserver_v2(setup, counts, frames, args.mlserver_python, args.rounds)
        results += mlserver
    finally:
        if not args.keep:
            shutil.rmtree(setup.work, ignore_errors=True)
    machine_info["load_average_1m_at_end"] = os.getloadavg()[0]
    rows = [{**asdict(r), "rows_per_s": r.rows_per_s} for r in results]
    return {
        "machine": machine_info,
        "model": {"tag": setup.tag},
        "workers": setup.workers,
        "quick": bool(args.quick),
        "rounds": args.rounds,
        "counts": asdict(counts),
        "mlserver_binary_request": binary,
        "results": rows,
        "ratios": [*(evaluate(t, rows) for t in TARGETS), no_errors_check(rows)],
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    binary = report["mlserver_binary_request"]
    lines = [
        f"Model `{report['model']['tag']}`; {m['date']}, commit {m['git_commit'] or '?'}"
        f"{' (--quick)' if report.get('quick') else ''}. Machine: {m['cpu']}, {m['cores']} "
        f"cores; 1-min load average at start {fmt(m['load_average_1m_at_start'], 2)}, at end "
        f"{fmt(m.get('load_average_1m_at_end'), 2)}. One worker / process each; hey (one "
        "core) and the server share the cores. Each row: the median of "
        f"{report.get('rounds', 1)} rounds (tagserve's JSON and binary alternating).",
        "",
        f"MLServer's answer to a binary tensor request (what tritonclient sends by default): "
        f"{binary['status']}.",
        "",
        "| scenario | system | rows/s | p50 ms | p95 ms | p99 ms | non-200 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['scenario']} | {r['system']} | {fmt(r['rows_per_s'], 0)} | "
            f"{fmt(r['p50_ms'], 2)} | {fmt(r['p95_ms'], 2)} | {fmt(r['p99_ms'], 2)} | "
            f"{r['non_200']} |"
        )
    lines += ["", "| ratio | value | target | |", "| --- | ---: | --- | --- |"]
    for check in report["ratios"]:
        lines.append(
            f"| {check['ratio']} | {ratio_text(check)} | {check['target']} | {met_text(check)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.v2", description=__doc__)
    common_arguments(parser, "what to import and serve (an importer source)")
    parser.add_argument(
        "--mlserver-python",
        type=Path,
        default=Path(os.environ.get("MLSERVER_PYTHON", MLSERVER_PYTHON)),
        help="the python of MLServer's own virtualenv (default %(default)s)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of each load; the median is kept"
    )
    args = parser.parse_args(argv)
    return run_and_save(args, "v2", run, markdown)


if __name__ == "__main__":
    sys.exit(main())
