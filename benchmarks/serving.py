"""Side-by-side serving benchmark on the prod model: `python -m benchmarks.serving`.

In one run, on this machine, each server started and stopped here on 127.0.0.1:

1. in-process ``predict`` of the native sklearn Pipeline (the floor): 1-row latency, rows/s
   at 1k and 10k rows;
2. ``mlflow models serve --env-manager local`` on the same MLflow model files: 1-row latency
   at concurrency 1, 32 concurrent single-row clients, 1000-row requests (``/invocations``);
3. our BentoML service (``bentoml serve service:Tagserve``): ``predict`` at concurrency 1,
   ``predict`` and ``predict_batch`` under 32 concurrent single-row clients (with 503
   counts), 1000-row requests on ``predict_batch`` and ``/invocations``, and the
   adaptive-batch client streaming a file;
4. offline batch scoring: ``python -m clients score`` against ``mlflow models predict``
   (wall time of each command, start-up and model load included).

Load generator, servers and model share this machine's cores: read the ratios, not the
absolute numbers. Results go to ``benchmarks/results/latest.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from tests.helpers.servers import free_port, start_process

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
DATA = PROJECT_ROOT / "data" / "diamonds.parquet"


class BenchmarkError(Exception):
    pass


@dataclass
class Result:
    scenario: str
    system: str
    requests: int = 0
    rows: int = 0
    seconds: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    shed_503: int = 0
    errors: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float | None:
        return self.rows / self.seconds if self.seconds > 0 and self.rows else None


def percentiles(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    ms = np.asarray(latencies) * 1000
    return {f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 95, 99)}


# --------------------------------------------------------------------------- processes


@contextlib.contextmanager
def server(
    name: str, cmd: list[str], env: dict[str, str], ready_path: str, port: int, log: Path
) -> Iterator[str]:
    """``cmd`` serving on 127.0.0.1:``port`` until the block ends (stopped with its workers)."""
    print(f"  starting {name} on 127.0.0.1:{port} ...", flush=True)
    url = f"http://127.0.0.1:{port}"
    try:
        process = start_process(
            cmd, url=url, ready_path=ready_path, env=env, cwd=PROJECT_ROOT, log=log
        )
    except RuntimeError as exc:
        raise BenchmarkError(f"{name}: {exc}") from None
    try:
        yield url
    finally:
        process.stop()


# --------------------------------------------------------------------------- load


async def load(
    url: str,
    path: str,
    body: Callable[[int], Any],
    *,
    concurrency: int,
    requests: int,
    rows_per_request: int,
    warmup: int = 5,
) -> dict[str, Any]:
    """``requests`` POSTs from ``concurrency`` clients, each waiting for its answer."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        for i in range(warmup):
            await client.post(path, json=body(i))
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        counter = iter(range(requests))

        async def worker() -> None:
            for i in counter:
                began = time.perf_counter()
                try:
                    response = await client.post(path, json=body(i))
                    status = response.status_code
                except httpx.HTTPError:
                    status = -1
                elapsed = time.perf_counter() - began
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(elapsed)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    ok = statuses.get(200, 0)
    return {
        "requests": requests,
        "rows": ok * rows_per_request,
        "seconds": seconds,
        "shed_503": statuses.get(503, 0),
        "errors": requests - ok - statuses.get(503, 0),
        **percentiles(latencies),
    }


def measure(
    scenario: str,
    system: str,
    url: str,
    path: str,
    body,
    *,
    concurrency: int,
    requests: int,
    rows_per_request: int = 1,
    note: str = "",
) -> Result:
    numbers = asyncio.run(
        load(
            url,
            path,
            body,
            concurrency=concurrency,
            requests=requests,
            rows_per_request=rows_per_request,
        )
    )
    result = Result(scenario, system, note=note, **numbers)
    shown = f"{result.rows_per_s:,.0f} rows/s" if result.rows_per_s else "no rows"
    print(
        f"    {scenario:<34} {system:<28} {shown}, p50 {fmt(result.p50_ms)} ms, "
        f"503s {result.shed_503}, errors {result.errors}",
        flush=True,
    )
    return result


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


# --------------------------------------------------------------------------- the run


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        memory = round(kb / 1024**2, 1)
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    versions = {}
    for package in ("bentoml", "mlflow", "scikit-learn", "pandas", "httpx"):
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            versions[package] = importlib_metadata.version(package)
    commit = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory,
        "load_average_1m_at_start": load1,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": commit,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def import_model(source: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "importers", source, "--json"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise BenchmarkError(f"import of {source} failed: {done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict[str, Any]:
    from clients.service import SERVICE_TARGET, ServiceInfo
    from inference.constants import MLFLOW_TRUST_SWITCH, MODEL_ENV
    from inference.contract import coerce, json_records
    from inference.model import load_model

    machine_info = machine()  # the load average before this run adds its own
    scale = 0.3 if args.quick else 1.0
    n = lambda count: max(10, int(count * scale))  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="tagserve-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENTOML_")}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",  # mlflow serve execs uvicorn
        BENTOML_HOME=str(work / "bentoml"),
        BENTOML_DO_NOT_TRACK="true",
        PYTHONPATH=str(PROJECT_ROOT),
        MLFLOW_TRACKING_URI=f"file://{work / 'mlruns'}",
        TMPDIR=str(work),
    )
    if args.home:
        env["TAGSERVE_HOME"] = str(args.home)
    print(f"benchmark: importing {args.source} into {work / 'bentoml'}", flush=True)
    imported = import_model(args.source, env)
    tag = imported["tag"]
    model_dir = Path(imported["path"]) / "mlflow_model"
    model = load_model(model_dir)  # native sklearn, n_jobs=1: what the service runs
    forest = model.pipeline[-1]
    frame = pd.read_parquet(DATA)
    rng = np.random.default_rng(0)
    sample = frame.iloc[rng.integers(0, len(frame), 10_000)].reset_index(drop=True)
    X = coerce(sample, model.contract)
    records = json_records(X, model.contract)
    results: list[Result] = []

    # 1. the floor: the model in this process
    print("in-process floor", flush=True)
    one = X.head(1)
    for _ in range(20):
        model.pipeline.predict(one)
    latencies = []
    for _ in range(n(500)):
        began = time.perf_counter()
        model.pipeline.predict(one)
        latencies.append(time.perf_counter() - began)
    results.append(
        Result(
            "1 row, concurrency 1",
            "in-process predict (floor)",
            requests=len(latencies),
            rows=len(latencies),
            seconds=sum(latencies),
            **percentiles(latencies),
        )
    )
    for size in (1_000, 10_000):
        block = X.head(size)
        best = min(timed(lambda b=block: model.pipeline.predict(b)) for _ in range(3))
        results.append(
            Result(
                f"{size:,}-row batch",
                "in-process predict (floor)",
                requests=1,
                rows=size,
                seconds=best,
                p50_ms=best * 1000,
            )
        )

    single = lambda i: records[i % len(records)]  # noqa: E731
    rows_1000 = [records[(i * 1000) % 9000 : (i * 1000) % 9000 + 1000] for i in range(10)]
    split_1000 = [
        {"dataframe_split": {"columns": list(X.columns), "data": [list(r.values()) for r in rows]}}
        for rows in rows_1000
    ]

    # 2. mlflow models serve
    port = free_port()
    mlflow_env = {**env, MLFLOW_TRUST_SWITCH: "true"}
    cmd = [
        str(VENV_BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        str(model_dir),
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    print("mlflow models serve", flush=True)
    with server("mlflow models serve", cmd, mlflow_env, "/ping", port, work / "mlflow.log") as url:
        invocation = lambda i: {"dataframe_records": [single(i)]}  # noqa: E731
        results.append(
            measure(
                "1 row, concurrency 1",
                "mlflow serve /invocations",
                url,
                "/invocations",
                invocation,
                concurrency=1,
                requests=n(500),
            )
        )
        results.append(
            measure(
                "1 row, 32 concurrent clients",
                "mlflow serve /invocations",
                url,
                "/invocations",
                invocation,
                concurrency=32,
                requests=n(3000),
            )
        )
        results.append(
            measure(
                "1,000-row requests",
                "mlflow serve /invocations",
                url,
                "/invocations",
                lambda i: split_1000[i % 10],
                concurrency=2,
                requests=n(60),
                rows_per_request=1000,
            )
        )

    # 3. our service
    port = free_port()
    ours_env = {**env, MODEL_ENV: tag}
    cmd = [
        str(VENV_BIN / "bentoml"),
        "serve",
        SERVICE_TARGET,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    print("bentoml serve (tagserve)", flush=True)
    with server("tagserve", cmd, ours_env, "/readyz", port, work / "tagserve.log") as url:
        meta = httpx.get(f"{url}/metadata", timeout=30).json()
        ServiceInfo.from_metadata(meta)  # the contract the clients rely on
        results.append(
            measure(
                "1 row, concurrency 1",
                "tagserve predict",
                url,
                "/predict",
                single,
                concurrency=1,
                requests=n(500),
            )
        )
        results.append(
            measure(
                "1 row, 32 concurrent clients",
                "tagserve predict",
                url,
                "/predict",
                single,
                concurrency=32,
                requests=n(3000),
            )
        )
        results.append(
            measure(
                "1 row, 32 concurrent clients",
                "tagserve predict_batch",
                url,
                "/predict_batch",
                lambda i: [single(i)],
                concurrency=32,
                requests=n(3000),
                note="adaptive batching",
            )
        )
        results.append(
            measure(
                "1,000-row requests",
                "tagserve predict_batch",
                url,
                "/predict_batch",
                lambda i: rows_1000[i % 10],
                concurrency=2,
                requests=n(60),
                rows_per_request=1000,
            )
        )
        results.append(
            measure(
                "1,000-row requests",
                "tagserve /invocations",
                url,
                "/invocations",
                lambda i: split_1000[i % 10],
                concurrency=2,
                requests=n(60),
                rows_per_request=1000,
            )
        )
        results.append(stream_result(url, work, frame, n(50_000)))

    # 4. offline batch scoring, whole commands
    print("offline batch scoring", flush=True)
    rows = n(args.offline_rows)
    big = frame.drop(columns=["price"]).iloc[rng.integers(0, len(frame), rows)]
    big.to_csv(work / "offline.csv", index=False)
    ours, ours_rss, ours_out = timed_command(
        [
            sys.executable,
            "-m",
            "clients",
            "score",
            str(work / "offline.csv"),
            str(work / "offline.parquet"),
            "--model",
            tag,
            "--no-progress",
        ],
        env,
    )
    results.append(
        Result(
            f"offline {rows:,} rows (CSV)",
            "clients score (chunked)",
            requests=1,
            rows=rows,
            seconds=ours,
            note="wall time, start-up incl.",
            extra={"peak_rss_mb": ours_rss, "steady_rate": steady_rate(ours_out)},
        )
    )
    theirs, theirs_rss, _ = timed_command(
        [
            str(VENV_BIN / "mlflow"),
            "models",
            "predict",
            "-m",
            str(model_dir),
            "-i",
            str(work / "offline.csv"),
            "-t",
            "csv",
            "-o",
            str(work / "offline.json"),
            "--env-manager",
            "local",
        ],
        mlflow_env,
    )
    results.append(
        Result(
            f"offline {rows:,} rows (CSV)",
            "mlflow models predict",
            requests=1,
            rows=rows,
            seconds=theirs,
            note="wall time, start-up incl.",
            extra={"peak_rss_mb": theirs_rss},
        )
    )
    agreement = compare_offline(work)
    results[-1].extra.update(agreement)
    print(f"    predictions: {agreement}")
    for r in results[-2:]:
        print(f"    {r.system:<28} {r.rows_per_s:,.0f} rows/s ({r.seconds:.1f} s)")

    return {
        "machine": machine_info,
        "model": {
            "tag": tag,
            "source": imported.get("source_ref"),
            "estimator": type(forest).__name__,
            "n_estimators": getattr(forest, "n_estimators", None),
            "max_depth": getattr(forest, "max_depth", None),
        },
        "results": [{**asdict(r), "rows_per_s": r.rows_per_s} for r in results],
        "work_dir": str(work),
    }


def timed(fn: Callable[[], Any]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def steady_rate(stdout: str) -> float | None:
    """The rows/s that ``clients score`` reports (its chunks: no start-up, no model load)."""
    import re

    found = re.search(r"\(([\d,]+) rows/s;", stdout)
    return float(found.group(1).replace(",", "")) if found else None


def timed_command(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run ``cmd``; return (wall seconds, peak RSS in MB, stdout)."""
    began = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)  # the rusage of this child alone
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - began
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise BenchmarkError(f"{' '.join(cmd[:4])} failed: {stderr.strip()[-2000:]}")
    return seconds, usage.ru_maxrss // 1024, stdout


def compare_offline(work: Path) -> dict[str, Any]:
    """Both offline jobs must agree before their speeds are compared. ``mlflow models
    predict`` runs the forest with its saved n_jobs=-1, which sums the trees in the order its
    threads finish: its last bits vary from run to run (about 1e-12 relative), ours do not."""
    ours = pd.read_parquet(work / "offline.parquet")["prediction"].to_numpy()
    raw = json.loads((work / "offline.json").read_text())
    theirs = np.asarray(raw["predictions"] if isinstance(raw, dict) else raw, dtype=float)
    theirs = theirs.ravel()
    if len(ours) != len(theirs) or not np.allclose(ours, theirs, rtol=1e-9, atol=0):
        raise BenchmarkError("clients score and mlflow models predict disagree")
    return {
        "identical_rows": int((ours == theirs).sum()),
        "max_relative_difference": float(np.max(np.abs(ours - theirs) / np.abs(ours))),
    }


def stream_result(url: str, work: Path, frame: pd.DataFrame, rows: int) -> Result:
    from clients.stream import stream_file

    source = frame.drop(columns=["price"]).sample(n=rows, replace=True, random_state=1)
    source.to_parquet(work / "stream.parquet")
    summary = stream_file(
        work / "stream.parquet",
        work / "stream.parquet.out.parquet",
        url=url,
        concurrency=8,
        batch_size=100,
        progress=False,
    )
    result = Result(
        f"stream {rows:,} rows",
        "clients stream -c 8 -b 100",
        requests=summary.requests,
        rows=summary.rows,
        seconds=summary.seconds,
        p50_ms=summary.percentile(50),
        p99_ms=summary.percentile(99),
        shed_503=summary.shed,
        errors=summary.errors,
        note="predict_batch, order kept, resumable",
    )
    print(f"    {result.scenario:<34} {result.system:<28} {result.rows_per_s:,.0f} rows/s")
    return result


# --------------------------------------------------------------------------- reports


def ratio_note(result: dict[str, Any], by_key: dict[tuple[str, str], dict[str, Any]]) -> str:
    """The comparison that matters for each row, as a ratio."""
    scenario, system = result["scenario"], result["system"]
    floor_1 = by_key.get(("1 row, concurrency 1", "in-process predict (floor)"))
    if scenario == "1 row, concurrency 1" and floor_1 and system != floor_1["system"]:
        return f"p50 {result['p50_ms'] / floor_1['p50_ms']:.1f}x the floor"
    if scenario == "1 row, 32 concurrent clients" and system.startswith("tagserve"):
        ref = by_key.get((scenario, "mlflow serve /invocations"))
        if ref and ref["rows_per_s"] and result["rows_per_s"]:
            return f"{result['rows_per_s'] / ref['rows_per_s']:.2f}x mlflow's rows/s"
    if scenario == "1,000-row requests":
        floor = by_key.get(("1,000-row batch", "in-process predict (floor)"))
        if floor and result["rows_per_s"]:
            return f"{result['rows_per_s'] / floor['rows_per_s']:.2f}x the floor's rows/s"
    if scenario.startswith("offline"):
        rss = f"peak RSS {result['extra'].get('peak_rss_mb')} MB"
        ref = next(
            (r for (s, y), r in by_key.items() if s == scenario and y.startswith("mlflow")), None
        )
        if not system.startswith("clients") or not ref:
            return rss
        steady = result["extra"].get("steady_rate")
        steady = f", {steady:,.0f} rows/s without start-up and model load" if steady else ""
        return (
            f"{result['rows_per_s'] / ref['rows_per_s']:.2f}x mlflow models predict; {rss}{steady}"
        )
    if scenario.startswith("stream"):
        floor = by_key.get(("10,000-row batch", "in-process predict (floor)"))
        if floor and result["rows_per_s"]:
            return f"{result['rows_per_s'] / floor['rows_per_s']:.2f}x the floor's rows/s"
    return ""


def markdown(report: dict[str, Any]) -> str:
    m, model = report["machine"], report["model"]
    by_key = {(r["scenario"], r["system"]): r for r in report["results"]}
    lines = [
        f"Model `{model['tag']}` ({model['estimator']}, {model['n_estimators']} trees, "
        f"max_depth {model['max_depth']}); {m['date']}, commit {m['git_commit'] or '?'}.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['os']}, "
        f"Python {m['python']}, bentoml {m['versions'].get('bentoml')}, mlflow "
        f"{m['versions'].get('mlflow')}; 1-min load average at start "
        f"{fmt(m['load_average_1m_at_start'], 2)}. Load generator and servers share the cores.",
        "",
        "| scenario | system | rows/s | p50 ms | p95 ms | p99 ms | 503s | errors | compared |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['scenario']} | {r['system']} | {fmt(r['rows_per_s'], 0)} | "
            f"{fmt(r['p50_ms'])} | {fmt(r['p95_ms'])} | {fmt(r['p99_ms'])} | {r['shed_503']} | "
            f"{r['errors']} | {ratio_note(r, by_key)} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    single = [r for r in results if r["scenario"] == "1 row, concurrency 1"]
    names = [r["system"] for r in single]
    for i, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        left.bar(
            np.arange(len(single)) + (i - 1) * 0.27,
            [r[q] or 0 for r in single],
            0.27,
            label=q.replace("_ms", ""),
        )
    left.set_xticks(np.arange(len(single)), names, rotation=15, ha="right", fontsize=8)
    left.set_ylabel("ms per 1-row request (log)")
    left.set_yscale("log")
    left.set_title("1 row, concurrency 1")
    left.legend()
    rated = [r for r in results if r["rows_per_s"] and r["scenario"] != "1 row, concurrency 1"]
    labels = [f"{r['scenario']}\n{r['system']}" for r in rated]
    colors = [
        "tab:gray"
        if "floor" in r["system"]
        else "tab:orange"
        if "mlflow" in r["system"]
        else "tab:blue"
        for r in rated
    ]
    right.barh(np.arange(len(rated)), [r["rows_per_s"] for r in rated], color=colors)
    right.set_yticks(np.arange(len(rated)), labels, fontsize=7)
    right.invert_yaxis()
    right.set_xscale("log")
    right.set_xlabel("rows/s (log): gray floor, orange MLflow, blue tagserve")
    right.set_title("Throughput")
    m = report["machine"]
    fig.suptitle(
        f"tagserve vs MLflow, {report['model']['tag']} - {m['cpu']}, {m['cores']} "
        f"cores, {m['date']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__)
    parser.add_argument(
        "--source",
        default="model_export:prod",
        help="what to import and serve (an importer source; default "
        "%(default)s of $TAGSERVE_HOME or .tagserve)",
    )
    parser.add_argument("--home", type=Path, default=None, help="pipeline home")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--offline-rows", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="about a third of the requests")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    try:
        report = run(args)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not args.keep:
        shutil.rmtree(report.pop("work_dir"), ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(report)
    (args.out / "latest.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "latest.md").write_text(table)
    plot(report, args.out / "latest.png")
    print()
    print(table)
    print(f"saved {args.out / 'latest.json'}, latest.md, latest.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
