"""Side-by-side serving benchmark on the prod model: `python -m benchmarks.serving`.

In one run, on this machine, each server started alone on 127.0.0.1 and stopped before the
next one starts, HTTP load from ``hey`` (``benchmarks.hey``: compiled, one core):

1. the model alone, in this process: 1-row and 1,000-row ``predict`` (where the time goes),
   and one record through the record entry ``/predict`` uses (``predict_records``);
2. the framework floor (``benchmarks.floor_service``: a BentoML service with the same record
   schema and no model): ``/predict`` at concurrency 1 and under 32 concurrent clients;
3. our service (``bentoml serve service:Tagserve``): ``/predict`` at concurrency 1, ``/predict``
   and ``/predict_batch`` under 32 single-record clients, 1,000-row requests on
   ``/predict_batch`` and ``/invocations``, 10,000-row requests on ``/invocations``, and
   ``clients stream`` on a file;
4. ``mlflow models serve --env-manager local`` on the same MLflow model files, with as many
   workers as ours: ``/invocations`` with the same loads;
5. offline scoring: ``python -m clients score`` against ``mlflow models predict`` (wall time
   of each whole command, start-up and model load included) on a 200,000-row and a
   1,000,000-row CSV, drawn (seeded) from the shipped diamonds data into the temp folder.

Then the ratios the project sets targets for (``TARGETS``), each marked met or not. The load
generator, servers and model share this machine's cores: read the ratios, not the absolute
numbers. Results go to ``benchmarks/results/latest.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
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

import numpy as np
import pandas as pd

from benchmarks.hey import Load, LoadError, hey_path, run_hey, warm_up
from benchmarks.servers import Server, free_port, start_process, tree_rss_mb
from inference import strict_json

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
DATA = PROJECT_ROOT / "data" / "diamonds.parquet"
FLOOR_TARGET = "benchmarks.floor_service:Floor"

# scenario names (the rows of the table and the keys of the ratios)
C1 = "1 record, concurrency 1"
C32 = "1 record, 32 concurrent clients"
ROWS_1000 = "1,000-row requests, concurrency 2"
ROWS_10000 = "10,000-row requests, concurrency 2"
MODEL_1 = "1 record"
# The label keeps the method's former name, so that new results compare with the recorded ones.
MODEL_RECORD = "1 record, record entry (answer_records)"
MODEL_1000 = "1,000 rows"
# system names
MODEL = "sklearn Pipeline alone (in-process)"
FAST_MODEL = "fast path alone (in-process)"
FLOOR = "floor: BentoML, no model /predict"
PREDICT = "tagserve /predict"
PREDICT_BATCH = "tagserve /predict_batch"
INVOCATIONS = "tagserve /invocations"
MLFLOW = "mlflow models serve /invocations"
SCORE = "clients score"
OFFLINE_SMALL = "offline, small CSV"
OFFLINE_BIG = "offline, big CSV"
MLFLOW_PREDICT = "mlflow models predict"
TEXT_C32 = "text model (sklearn serves), 1 record, 32 clients"
MEMORY = "memory of one replica after"  # + the request count
TAGSERVE = "tagserve (bentoml serve, 1 worker)"
MLFLOW_SERVE = "mlflow models serve -w 1"
MLSERVER = "MLServer (mlserver-mlflow, in-process)"


class BenchmarkError(Exception):
    pass


@dataclass
class Result:
    """One measured scenario of one system."""

    scenario: str
    system: str
    requests: int = 0
    rows: int = 0
    seconds: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    statuses: dict[int, int] = field(default_factory=dict)
    non_200: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    rss_mb: float | None = None  # the server's whole process tree (the memory scenario)

    @property
    def rows_per_s(self) -> float | None:
        return self.rows / self.seconds if self.seconds > 0 and self.rows else None

    @classmethod
    def from_load(cls, scenario: str, system: str, load: Load, note: str = "") -> Result:
        return cls(
            scenario,
            system,
            requests=load.requests,
            rows=load.ok * load.rows_per_request,
            seconds=load.seconds,
            p50_ms=load.p50_ms,
            p95_ms=load.p95_ms,
            p99_ms=load.p99_ms,
            statuses=load.statuses,
            non_200=load.non_200,
            note=note,
        )


# --------------------------------------------------------------------------- ratios


@dataclass(frozen=True)
class Target:
    """``metric(numerator) / metric(denominator)``, and the bound the project sets on it
    (``None``: reported, no target)."""

    label: str
    metric: str  # a Result field or property: p50_ms, p99_ms, rows_per_s
    numerator: tuple[str, str]  # (scenario, system)
    denominator: tuple[str, str] | None  # None: the numerator's own value (in ``unit``)
    at_most: float | None = None
    at_least: float | None = None
    unit: str = "x"


TARGETS = (
    Target("/predict c=1 p50, ours / floor", "p50_ms", (C1, PREDICT), (C1, FLOOR), at_most=1.2),
    Target("/predict c=1 p99, ours / floor", "p99_ms", (C1, PREDICT), (C1, FLOOR)),
    Target("c=1 p50, MLflow / ours", "p50_ms", (C1, MLFLOW), (C1, PREDICT)),
    Target("c=1 p99, MLflow / ours", "p99_ms", (C1, MLFLOW), (C1, PREDICT)),
    Target(
        "one record in-process, fast path (record entry) p50",
        "p50_ms",
        (MODEL_RECORD, FAST_MODEL),
        None,
        at_most=0.03,
        unit=" ms",
    ),
    Target(
        "32 clients rows/s, predict_batch / MLflow",
        "rows_per_s",
        (C32, PREDICT_BATCH),
        (C32, MLFLOW),
        at_least=6,
    ),
    Target("32 clients rows/s, predict / MLflow", "rows_per_s", (C32, PREDICT), (C32, MLFLOW)),
    Target("32 clients rows/s, predict / floor", "rows_per_s", (C32, PREDICT), (C32, FLOOR)),
    Target(
        "1,000-row rows/s, /invocations / MLflow",
        "rows_per_s",
        (ROWS_1000, INVOCATIONS),
        (ROWS_1000, MLFLOW),
        at_least=3,
    ),
    Target(
        "10,000-row rows/s, /invocations / MLflow",
        "rows_per_s",
        (ROWS_10000, INVOCATIONS),
        (ROWS_10000, MLFLOW),
        at_least=4,
    ),
    Target(
        "1,000-row rows/s, predict_batch / MLflow",
        "rows_per_s",
        (ROWS_1000, PREDICT_BATCH),
        (ROWS_1000, MLFLOW),
        at_least=3,
    ),
    Target(
        "1,000-row rows/s, predict_batch / /invocations",
        "rows_per_s",
        (ROWS_1000, PREDICT_BATCH),
        (ROWS_1000, INVOCATIONS),
        at_least=0.9,
    ),
    Target(
        "text model, 32 clients rows/s, predict_batch / predict",
        "rows_per_s",
        (TEXT_C32, PREDICT_BATCH),
        (TEXT_C32, PREDICT),
        at_least=3,
    ),
    Target(
        "memory of one replica, tagserve / MLServer",
        "rss_mb",
        (MEMORY, TAGSERVE),
        (MEMORY, MLSERVER),
        at_most=1.3,
    ),
    Target(
        "memory of one replica, tagserve / MLflow",
        "rss_mb",
        (MEMORY, TAGSERVE),
        (MEMORY, MLFLOW_SERVE),
    ),
    Target(
        "offline rows/s (small CSV), clients score / mlflow models predict",
        "rows_per_s",
        (OFFLINE_SMALL, SCORE),
        (OFFLINE_SMALL, MLFLOW_PREDICT),
    ),
    Target(
        "offline rows/s (big CSV), clients score / mlflow models predict",
        "rows_per_s",
        (OFFLINE_BIG, SCORE),
        (OFFLINE_BIG, MLFLOW_PREDICT),
        at_least=4,
    ),
)


def find(results: list[dict[str, Any]], key: tuple[str, str]) -> dict[str, Any] | None:
    """The result whose scenario starts with ``key[0]`` and whose system is ``key[1]``."""
    scenario, system = key
    return next(
        (r for r in results if r["system"] == system and r["scenario"].startswith(scenario)),
        None,
    )


def evaluate(target: Target, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The ratio ``target`` names in ``results``, its bound, and whether the bound is met
    (``None``: no bound, or a side missing from this run)."""
    top = find(results, target.numerator)
    bottom = None if target.denominator is None else find(results, target.denominator)
    value = None
    if target.denominator is None:
        value = top.get(target.metric) if top else None
    elif top and bottom and top.get(target.metric) and bottom.get(target.metric):
        value = top[target.metric] / bottom[target.metric]
    bound, met = "", None
    if target.at_most is not None:
        bound = f"<= {target.at_most:g}{target.unit}"
        met = None if value is None else value <= target.at_most
    elif target.at_least is not None:
        bound = f">= {target.at_least:g}{target.unit}"
        met = None if value is None else value >= target.at_least
    check = {"ratio": target.label, "value": value, "target": bound, "met": met}
    return check if target.unit == "x" else {**check, "unit": target.unit}


NO_ERRORS = "non-200 answers, every scenario"


def no_errors_check(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The other target: every request of every scenario answered 200."""
    value = sum(r["non_200"] for r in results) if results else None
    return {
        "ratio": NO_ERRORS,
        "value": value,
        "target": "= 0",
        "met": None if value is None else value == 0,
        "count": True,
    }


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [*(evaluate(t, results) for t in TARGETS), no_errors_check(results)]


# --------------------------------------------------------------------------- processes


@contextlib.contextmanager
def server_process(
    name: str, cmd: list[str], env: dict[str, str], ready_path: str, port: int, log: Path
) -> Iterator[Server]:
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
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def server(
    name: str, cmd: list[str], env: dict[str, str], ready_path: str, port: int, log: Path
) -> Iterator[str]:
    """:func:`server_process`, yielding its URL."""
    with server_process(name, cmd, env, ready_path, port, log) as process:
        yield process.url


def bentoml_server(target: str, env: dict[str, str], log: Path) -> Any:
    """``bentoml serve target`` (ours or the floor), ready once /readyz answers."""
    port = free_port()
    cmd = [str(VENV_BIN / "bentoml"), "serve", target, "--host", "127.0.0.1"]
    return server(target, [*cmd, "--port", str(port)], env, "/readyz", port, log)


def mlflow_server(model_dir: Path, workers: int, env: dict[str, str], log: Path) -> Any:
    port = free_port()
    cmd = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", str(model_dir)]
    cmd += ["--env-manager", "local", "-w", str(workers), "-h", "127.0.0.1", "-p", str(port)]
    return server("mlflow models serve", cmd, env, "/ping", port, log)


# --------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Bodies:
    """The request bodies (JSON bytes), one per API and size, of distinct real rows (``hey``
    sends the same body every time)."""

    record: bytes  # /predict
    record_list: bytes  # /predict_batch, 1 record
    invocation: bytes  # /invocations, 1 record (dataframe_records, what MLflow clients send)
    records_1000: bytes  # /predict_batch, 1,000 records
    split_1000: bytes  # /invocations, 1,000 rows (dataframe_split)
    split_10000: bytes  # /invocations, 10,000 rows (dataframe_split)

    @classmethod
    def from_records(cls, records: list[dict[str, Any]], columns: list[str]) -> Bodies:
        one, thousand = records[0], records[:1000]

        def split(rows: list[dict[str, Any]]) -> bytes:
            data = [[r[c] for c in columns] for r in rows]
            return json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode()

        return cls(
            record=json.dumps(one).encode(),
            record_list=json.dumps([one]).encode(),
            invocation=json.dumps({"dataframe_records": [one]}).encode(),
            records_1000=json.dumps(thousand).encode(),
            split_1000=split(thousand),
            split_10000=split(records[:10_000]),
        )


@dataclass(frozen=True)
class Counts:
    """How many requests each load sends (``--quick``: fewer)."""

    single: int = 2000  # concurrency 1: enough samples for a p99
    clients_32: int = 4000
    rows_1000: int = 600  # a few seconds of load each: a ratio of two short loads is noise
    rows_10000: int = 100
    stream_rows: int = 50_000
    offline_rows: int = 200_000
    offline_rows_big: int = 1_000_000
    model_calls: int = 1000
    memory_requests: int = 2000

    def scaled(self, factor: float) -> Counts:
        return Counts(*(max(32, int(v * factor)) for v in asdict(self).values()))


def measure(
    scenario: str,
    system: str,
    url: str,
    body: bytes,
    *,
    requests: int,
    concurrency: int,
    rows_per_request: int = 1,
    note: str = "",
    headers: dict[str, str] | None = None,
) -> Result:
    """One ``hey`` run (after a warm-up whose numbers are dropped), printed as it ends."""
    try:
        # a tenth of the requests, at most 50: 1,000-row bodies warm up in a few requests
        warmup = min(50, max(4, requests // 10))
        warm_up(url, body, requests=warmup, concurrency=min(2, concurrency), headers=headers)
        load = run_hey(
            url,
            body,
            requests=requests,
            concurrency=concurrency,
            rows_per_request=rows_per_request,
            headers=headers,
        )
    except LoadError as exc:
        raise BenchmarkError(str(exc)) from None
    result = Result.from_load(scenario, system, load, note)
    print(
        f"    {scenario:<34} {system:<34} {fmt(result.rows_per_s, 0)} rows/s, "
        f"p50 {fmt(result.p50_ms, 2)} ms, p99 {fmt(result.p99_ms, 2)} ms, "
        f"non-200 {result.non_200} {result.statuses}",
        flush=True,
    )
    return result


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def distinct_rows(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` real rows of ``frame`` in a seeded random order, no two equal among any
    ``len(unique rows)`` in a row (so all distinct when ``n`` is at most that): one row
    repeated flatters every tree walk (its path stays in the CPU's caches)."""
    unique = frame.drop_duplicates().reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(len(unique))
    return unique.iloc[np.resize(order, n)].reset_index(drop=True)  # the order, cycled


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
    for package in ("bentoml", "mlflow", "scikit-learn", "pandas"):
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            versions[package] = importlib_metadata.version(package)
    versions["hey"] = command_output(["dpkg-query", "-W", "-f", "${Version}", "hey"]) or "?"
    commit = command_output(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"])
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


def command_output(cmd: list[str]) -> str:
    """What ``cmd`` prints, or "" when it cannot run (a machine without dpkg or git)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def served_contract(bento_model: Path) -> Any:
    """The contract the service enforces for the imported model at ``bento_model``: its
    signature and the domain its import recorded."""
    import yaml

    from inference.contract import read_contract

    metadata = yaml.safe_load((bento_model / "model.yaml").read_text()).get("metadata") or {}
    return read_contract(bento_model / "mlflow_model", metadata.get("domain"))


def import_model(source: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "importers", source, "--json", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no message"]
        raise BenchmarkError(f"import of {source} failed: {lines[-1].removeprefix('error: ')}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass
class Setup:
    """What every part of a run shares: the imported model, the environments, the bodies."""

    work: Path
    env: dict[str, str]  # servers and commands, with the temporary BENTOML_HOME
    tag: str
    model_dir: Path
    model: Any  # inference.model.LoadedModel
    frame: pd.DataFrame  # the shipped data set
    X: pd.DataFrame  # 10,000 rows of it, coerced to the contract
    bodies: Bodies
    workers: int
    fast: Any = None  # the same model on its exact fast path, as the service loads it


def prepare(source: str, home: Path | None) -> Setup:
    """Import ``source`` into a throw-away BentoML home and build the request bodies."""
    from inference.constants import FASTPATH_FOLDER, MODEL_ENV
    from inference.contract import coerce, domain_mask, json_records
    from inference.model import load_model
    from serving.settings import env_int

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
    if home:
        env["TAGSERVE_HOME"] = str(home)
    print(f"benchmark: importing {source} into {work / 'bentoml'}", flush=True)
    try:
        imported = import_model(source, env)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    env[MODEL_ENV] = imported["tag"]
    model_dir = Path(imported["path"]) / "mlflow_model"
    model = load_model(model_dir)  # native sklearn, n_jobs=1: what the service runs
    frame = pd.read_parquet(DATA)
    # Rows the service serves: those within the model's domain (the shipped data holds a few
    # impossible diamonds, a zero size, that the pipeline's own cleaning drops).
    frame = frame[domain_mask(frame, served_contract(Path(imported["path"])))]
    X = coerce(distinct_rows(frame[model.contract.features], 10_000, seed=0), model.contract)
    bodies = Bodies.from_records(json_records(X, model.contract), list(X.columns))
    # One worker for every server unless TAGSERVE_WORKERS says: the side-by-side compares
    # per worker (with 2 workers on 2 cores, MLflow's sklearn model fights itself for the cores
    # and is far slower at c=1 than with one); `python -m benchmarks.workers` measures the
    # worker count.
    workers = env_int("TAGSERVE_WORKERS", 1)
    env["TAGSERVE_WORKERS"] = str(workers)
    fast = load_model(model_dir, fast_folder=Path(imported["path"]) / FASTPATH_FOLDER)
    return Setup(work, env, imported["tag"], model_dir, model, frame, X, bodies, workers, fast)


def model_alone(setup: Setup, counts: Counts) -> list[Result]:
    """The model called in this process: no HTTP, no framework (where the time goes), on
    scikit-learn and on the exact fast path the service uses."""
    print("model alone, in-process", flush=True)
    results = []
    one, block = setup.X.head(1), setup.X.head(1000)
    for system, model in ((MODEL, setup.model), (FAST_MODEL, setup.fast)):
        if model is None or (system == FAST_MODEL and model.fast is None):
            continue
        for _ in range(20):
            model.predict(one)
        latencies = [timed(lambda m=model: m.predict(one)) for _ in range(counts.model_calls)]
        ms = np.asarray(latencies) * 1000
        best = min(timed(lambda m=model: m.predict(block)) for _ in range(5))
        record = [json_record(one)]
        for _ in range(20):
            model.predict_records(record)
        entry = [
            timed(lambda m=model, r=record: m.predict_records(r)) for _ in range(counts.model_calls)
        ]
        entry_ms = np.asarray(entry) * 1000
        results += [
            Result(
                MODEL_1,
                system,
                requests=len(latencies),
                rows=len(latencies),
                seconds=float(sum(latencies)),
                p50_ms=float(np.percentile(ms, 50)),
                p95_ms=float(np.percentile(ms, 95)),
                p99_ms=float(np.percentile(ms, 99)),
            ),
            Result(MODEL_1000, system, requests=1, rows=1000, seconds=best, p50_ms=best * 1000),
            Result(
                MODEL_RECORD,
                system,
                requests=len(entry),
                rows=len(entry),
                seconds=float(sum(entry)),
                p50_ms=float(np.percentile(entry_ms, 50)),
                p95_ms=float(np.percentile(entry_ms, 95)),
                p99_ms=float(np.percentile(entry_ms, 99)),
            ),
        ]
    return results


def json_record(frame: pd.DataFrame) -> dict[str, Any]:
    """The first row of ``frame`` as the service's pydantic record gives it to the model:
    Python values, None for a missing one."""
    return {k: (None if pd.isna(v) else v) for k, v in frame.iloc[0].to_dict().items()}


def floor_results(setup: Setup, counts: Counts) -> list[Result]:
    """The framework floor: BentoML parsing the same record, no model."""
    print(f"floor: bentoml serve {FLOOR_TARGET}", flush=True)
    with bentoml_server(FLOOR_TARGET, setup.env, setup.work / "floor.log") as url:
        body = setup.bodies.record
        return [
            measure(C1, FLOOR, f"{url}/predict", body, requests=counts.single, concurrency=1),
            measure(C32, FLOOR, f"{url}/predict", body, requests=counts.clients_32, concurrency=32),
        ]


def tagserve_results(setup: Setup, counts: Counts, *, bulk: bool = True) -> list[Result]:
    """Our service under every load (``bulk=False``: the single-record loads only)."""
    from clients.service import SERVICE_TARGET

    print(f"tagserve: bentoml serve {SERVICE_TARGET} ({setup.workers} workers)", flush=True)
    log = setup.work / f"tagserve-{setup.workers}.log"
    b = setup.bodies
    with bentoml_server(SERVICE_TARGET, setup.env, log) as url:
        results = [
            measure(C1, PREDICT, f"{url}/predict", b.record, requests=counts.single, concurrency=1),
            measure(
                C32, PREDICT, f"{url}/predict", b.record, requests=counts.clients_32, concurrency=32
            ),
            measure(
                C32,
                PREDICT_BATCH,
                f"{url}/predict_batch",
                b.record_list,
                requests=counts.clients_32,
                concurrency=32,
                note="adaptive batching",
            ),
        ]
        if not bulk:
            return results
        for scenario, system, path, body, requests, rows in (
            (ROWS_1000, PREDICT_BATCH, "/predict_batch", b.records_1000, counts.rows_1000, 1000),
            (ROWS_1000, INVOCATIONS, "/invocations", b.split_1000, counts.rows_1000, 1000),
            (ROWS_10000, INVOCATIONS, "/invocations", b.split_10000, counts.rows_10000, 10_000),
        ):
            results.append(
                measure(
                    scenario,
                    system,
                    f"{url}{path}",
                    body,
                    requests=requests,
                    concurrency=2,
                    rows_per_request=rows,
                )
            )
        results.append(stream_result(url, setup, counts.stream_rows))
    return results


def batching_results(setup: Setup, counts: Counts) -> list[Result]:
    """Where adaptive batching pays: single records from 32 clients on a model scikit-learn
    serves (a text column, no fast path), through ``/predict`` and ``/predict_batch``."""
    from benchmarks import text_model
    from clients.service import SERVICE_TARGET
    from inference.constants import MODEL_ENV

    print("text model (scikit-learn serves): /predict against /predict_batch", flush=True)
    folder = text_model.build(setup.work / "text-model")
    tag = import_model(f"dir:{folder}", setup.env, "--name", "tagserve-reviews")["tag"]
    env = {**setup.env, MODEL_ENV: tag}
    one = text_model.record()
    with bentoml_server(SERVICE_TARGET, env, setup.work / "text.log") as url:
        return [
            measure(
                TEXT_C32,
                system,
                f"{url}{path}",
                json.dumps(body).encode(),
                requests=counts.clients_32,
                concurrency=32,
            )
            for system, path, body in (
                (PREDICT, "/predict", one),
                (PREDICT_BATCH, "/predict_batch", [one]),
            )
        ]


def memory_results(setup: Setup, counts: Counts) -> list[Result]:
    from benchmarks.memory import replica_memory

    return replica_memory(setup, counts.memory_requests)


def mlflow_results(setup: Setup, counts: Counts) -> list[Result]:
    from inference.constants import MLFLOW_TRUST_SWITCH

    print(f"mlflow models serve ({setup.workers} workers)", flush=True)
    env = {**setup.env, MLFLOW_TRUST_SWITCH: "true"}
    b = setup.bodies
    with mlflow_server(setup.model_dir, setup.workers, env, setup.work / "mlflow.log") as url:
        invocations = f"{url}/invocations"
        return [
            measure(C1, MLFLOW, invocations, b.invocation, requests=counts.single, concurrency=1),
            measure(
                C32, MLFLOW, invocations, b.invocation, requests=counts.clients_32, concurrency=32
            ),
            measure(
                ROWS_1000,
                MLFLOW,
                invocations,
                b.split_1000,
                requests=counts.rows_1000,
                concurrency=2,
                rows_per_request=1000,
            ),
            measure(
                ROWS_10000,
                MLFLOW,
                invocations,
                b.split_10000,
                requests=counts.rows_10000,
                concurrency=2,
                rows_per_request=10_000,
            ),
        ]


def offline_results(setup: Setup, rows: int, size: str = OFFLINE_SMALL) -> list[Result]:
    """``clients score`` against ``mlflow models predict`` on one CSV of ``rows`` rows drawn
    from the shipped data (seeded), whole commands."""
    from inference.constants import MLFLOW_TRUST_SWITCH

    print(f"offline batch scoring, {rows:,} rows", flush=True)
    work, env = setup.work, setup.env
    features = setup.frame[setup.model.contract.features]
    distinct_rows(features, rows, seed=1).to_csv(work / "offline.csv", index=False)
    for stale in ("offline.parquet", "offline.json"):
        (work / stale).unlink(missing_ok=True)
    scenario = f"{size} ({rows:,} rows)"
    ours, ours_rss, ours_out = timed_command(
        [sys.executable, "-m", "clients", "score", str(work / "offline.csv")]
        + [str(work / "offline.parquet"), "--model", setup.tag, "--no-progress"],
        env,
    )
    theirs, theirs_rss, _ = timed_command(
        [str(VENV_BIN / "mlflow"), "models", "predict", "-m", str(setup.model_dir)]
        + ["-i", str(work / "offline.csv"), "-t", "csv", "-o", str(work / "offline.json")]
        + ["--env-manager", "local"],
        {**env, MLFLOW_TRUST_SWITCH: "true"},
    )
    agreement = compare_offline(work)
    note = "wall time, start-up and model load included"
    results = [
        Result(
            scenario,
            SCORE,
            requests=1,
            rows=rows,
            seconds=ours,
            note=note,
            extra={"peak_rss_mb": ours_rss, "steady_rows_per_s": steady_rate(ours_out)},
        ),
        Result(
            scenario,
            MLFLOW_PREDICT,
            requests=1,
            rows=rows,
            seconds=theirs,
            note=note,
            extra={"peak_rss_mb": theirs_rss, **agreement},
        ),
    ]
    for r in results:
        print(f"    {r.system:<34} {fmt(r.rows_per_s, 0)} rows/s ({r.seconds:.1f} s)", flush=True)
    return results


SCENARIOS = ("model", "floor", "tagserve", "mlflow", "offline", "batching", "memory")


def run(args: argparse.Namespace) -> dict[str, Any]:
    hey_path()  # no load generator: say so before anything starts
    machine_info = machine()  # the load average before this run adds its own
    counts = Counts(offline_rows=args.offline_rows, offline_rows_big=args.offline_rows_big)
    if args.quick:
        counts = counts.scaled(0.2)
    setup = prepare(args.source, args.home)
    parts = {
        "model": lambda: model_alone(setup, counts),
        "floor": lambda: floor_results(setup, counts),
        "tagserve": lambda: tagserve_results(setup, counts),
        "mlflow": lambda: mlflow_results(setup, counts),
        "offline": lambda: (
            offline_results(setup, counts.offline_rows, OFFLINE_SMALL)
            + offline_results(setup, counts.offline_rows_big, OFFLINE_BIG)
        ),
        "batching": lambda: batching_results(setup, counts),
        "memory": lambda: memory_results(setup, counts),
    }
    try:
        results = []
        for name in args.only or SCENARIOS:
            results += parts[name]()
    finally:
        if not args.keep:
            shutil.rmtree(setup.work, ignore_errors=True)
    machine_info["load_average_1m_at_end"] = os.getloadavg()[0]
    forest = setup.model.pipeline[-1]
    rows = [{**asdict(r), "rows_per_s": r.rows_per_s} for r in results]
    return {
        "machine": machine_info,
        "model": {
            "tag": setup.tag,
            "estimator": type(forest).__name__,
            "n_estimators": getattr(forest, "n_estimators", None),
            "max_depth": getattr(forest, "max_depth", None),
        },
        "workers": setup.workers,
        "quick": bool(args.quick),
        "only": list(args.only or SCENARIOS),
        "counts": asdict(counts),
        "results": rows,
        "ratios": ratios(rows),
    }


def timed(fn: Callable[[], Any]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def steady_rate(stdout: str) -> float | None:
    """The rows/s that ``clients score`` reports (its chunks: no start-up, no model load)."""
    found = re.search(r"\(([\d,]+) rows/s;", stdout)
    return float(found.group(1).replace(",", "")) if found else None


def timed_command(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run ``cmd``; return (wall seconds, peak RSS in MB of its process tree, stdout).

    The peak is sampled from ``/proc`` while it runs (the high-water mark of the command's
    own memory, and its process tree's total): the rusage of a child started from this
    large process reports this process's size, inherited at fork and exec."""
    began = time.perf_counter()
    peak = 0.0
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=err)
        while process.poll() is None:
            with contextlib.suppress(Exception):  # it may end between two reads
                peak = max(peak, high_water_mb(process.pid), tree_rss_mb(process.pid))
            time.sleep(0.05)
        seconds = time.perf_counter() - began
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise BenchmarkError(f"{' '.join(cmd[:4])} failed: {stderr.strip()[-2000:]}")
    return seconds, round(peak), stdout


def high_water_mb(pid: int) -> float:
    """The peak resident memory of process ``pid`` so far (``VmHWM``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def compare_offline(work: Path) -> dict[str, Any]:
    """Both offline jobs must agree (to 1e-9 relative) before their speeds are compared; how
    many rows are bit-identical is recorded (the exported model predicts with n_jobs=1, so
    all of them should be)."""
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


def stream_result(url: str, setup: Setup, rows: int) -> Result:
    """``clients stream`` of a file through ``/predict_batch`` (a Python client: its rows/s
    include the client's own cost on these cores)."""
    from clients.stream import stream_file

    source = distinct_rows(setup.frame[setup.model.contract.features], rows, seed=1)
    source.to_parquet(setup.work / "stream.parquet")
    summary = stream_file(
        setup.work / "stream.parquet",
        setup.work / "stream.out.parquet",
        url=url,
        concurrency=8,
        batch_size=100,
        progress=False,
    )
    result = Result(
        f"stream {rows:,} rows, 8 x 100 in flight",
        "clients stream (predict_batch)",
        requests=summary.requests,
        rows=summary.rows,
        seconds=summary.seconds,
        p50_ms=summary.percentile(50),
        p99_ms=summary.percentile(99),
        statuses={503: summary.shed} if summary.shed else {},
        non_200=summary.shed + summary.errors,
        note="order kept, resumable; Python client",
    )
    print(f"    {result.scenario:<34} {result.system:<34} {fmt(result.rows_per_s, 0)} rows/s")
    return result


# --------------------------------------------------------------------------- reports


def ratio_text(check: dict[str, Any]) -> str:
    if check["value"] is None:
        return "-"
    if check.get("count"):
        return str(check["value"])
    if check.get("unit"):
        return f"{check['value']:.3f}{check['unit']}"
    return f"{check['value']:.2f}x"


def met_text(check: dict[str, Any]) -> str:
    return {True: "met", False: "**not met**", None: "-" if check["target"] else ""}[check["met"]]


METRIC_NAMES = {"p50_ms": "p50", "p99_ms": "p99", "rows_per_s": "rows/s", "rss_mb": "RSS"}


def row_ratios(result: dict[str, Any], checks: list[dict[str, Any]]) -> str:
    """The ratios whose numerator is this row, for the table's last column."""
    shown = []
    for target, check in zip(TARGETS, [c for c in checks if not c.get("count")], strict=True):
        if find([result], target.numerator) is result and check["value"] is not None:
            what = target.label.rsplit(", ", 1)[1]
            shown.append(f"{METRIC_NAMES[target.metric]} {what}: {ratio_text(check)}")
    return "; ".join(shown)


def parts_text(report: dict[str, Any]) -> str:
    """ "; parts: ..." for a run of some scenarios only."""
    only = report.get("only", SCENARIOS)
    return "" if len(only) == len(SCENARIOS) else "; parts: " + ", ".join(only)


def markdown(report: dict[str, Any]) -> str:
    m, model = report["machine"], report["model"]
    checks = report["ratios"]
    lines = [
        f"Model `{model['tag']}` ({model['estimator']}, {model['n_estimators']} trees, "
        f"max_depth {model['max_depth']}); {m['date']}, commit {m['git_commit'] or '?'}"
        f"{' (--quick)' if report.get('quick') else ''}"
        f"{parts_text(report)}.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['os']}, "
        f"Python {m['python']}, bentoml {m['versions'].get('bentoml')}, mlflow "
        f"{m['versions'].get('mlflow')}, hey {m['versions'].get('hey')}; 1-min load average "
        f"at start {fmt(m['load_average_1m_at_start'], 2)}, at end "
        f"{fmt(m.get('load_average_1m_at_end'), 2)}. {report['workers']} worker(s) for "
        "each server. Load generator (hey, one core) and servers share the cores.",
        "",
        "| scenario | system | rows/s | p50 ms | p95 ms | p99 ms | RSS MB | non-200 | ratios |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["results"]:
        # a system that could not run says why
        shown = row_ratios(r, checks) or (r.get("note", "") if not r.get("requests", 1) else "")
        lines.append(
            f"| {r['scenario']} | {r['system']} | {fmt(r['rows_per_s'], 0)} | "
            f"{fmt(r['p50_ms'], 2)} | {fmt(r['p95_ms'], 2)} | {fmt(r['p99_ms'], 2)} | "
            f"{fmt(r.get('rss_mb'), 0)} | {r['non_200']} | {shown} |"
        )
    lines += ["", "| ratio | value | target | |", "| --- | ---: | --- | --- |"]
    for check in checks:
        lines.append(
            f"| {check['ratio']} | {ratio_text(check)} | {check['target']} | {met_text(check)} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, checks = report["results"], report["ratios"]
    fig, (left, middle, right) = plt.subplots(
        1, 3, figsize=(17, 5.5), gridspec_kw={"width_ratios": [1, 1.3, 1.3]}
    )
    single = [r for r in results if r["scenario"] in (C1, MODEL_1, MODEL_RECORD)]
    x = np.arange(len(single))
    for i, q in enumerate(("p50_ms", "p99_ms")):
        left.bar(x + (i - 0.5) * 0.38, [r[q] or 0 for r in single], 0.38, label=q[:3])
    left.set_xticks(x, [r["system"] for r in single], rotation=20, ha="right", fontsize=7)
    left.set_ylabel("ms per 1-record request")
    left.set_title("1 record, concurrency 1")
    left.legend()

    rated = [
        r for r in results if r["rows_per_s"] and r["scenario"] not in (C1, MODEL_1, MODEL_RECORD)
    ]
    colors = [color_of(r["system"]) for r in rated]
    middle.barh(np.arange(len(rated)), [r["rows_per_s"] for r in rated], color=colors)
    middle.set_yticks(
        np.arange(len(rated)), [f"{r['scenario']}\n{r['system']}" for r in rated], fontsize=6
    )
    middle.invert_yaxis()
    middle.set_xscale("log")
    middle.set_xlabel("rows/s (log): gray model/floor, orange MLflow, blue tagserve")
    middle.set_title("Throughput")

    shown = [
        c for c in checks if c["value"] is not None and not c.get("count") and not c.get("unit")
    ]
    right.barh(
        np.arange(len(shown)),
        [c["value"] for c in shown],
        color=[{True: "tab:green", False: "tab:red", None: "tab:gray"}[c["met"]] for c in shown],
    )
    for i, c in enumerate(shown):
        if c["target"]:
            bound = float(c["target"].split()[1].rstrip("x"))
            right.plot([bound, bound], [i - 0.4, i + 0.4], color="black", linewidth=2)
    right.set_yticks(np.arange(len(shown)), [c["ratio"] for c in shown], fontsize=7)
    right.invert_yaxis()
    right.set_xscale("log")
    ticks = [0.1, 0.25, 0.5, 1, 2, 4, 8, 16]
    right.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    right.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    right.set_xlabel("ratio (log); black: target; green met, red not")
    right.set_title("Ratios")
    m = report["machine"]
    fig.suptitle(
        f"tagserve vs the BentoML floor and MLflow, {report['model']['tag']} - {m['cpu']}, "
        f"{m['cores']} cores, {report['workers']} worker(s), {m['date']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def color_of(system: str) -> str:
    if system in (MODEL, FAST_MODEL, FLOOR):
        return "tab:gray"
    return "tab:orange" if system.startswith("mlflow") else "tab:blue"


def common_arguments(parser: argparse.ArgumentParser, source_help: str) -> None:
    """The options every benchmark takes: what to serve, where, and how much."""
    parser.add_argument("--source", default="model_export:prod", help=source_help)
    parser.add_argument("--home", type=Path, default=None, help="pipeline home")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--quick", action="store_true", help="a fifth of the requests")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")


def run_and_save(
    args: argparse.Namespace,
    stem: str,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
) -> int:
    """Run a benchmark, then write and print its results (:func:`save_report`); a refusal
    (no model, no hey...) is one ``error:`` line and exit code 1."""
    try:
        report = run(args)
    except (BenchmarkError, LoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    save_report(args.out, stem, report, table(report))
    print(f"saved {args.out / (stem + '.json')}, {stem}.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__)
    common_arguments(
        parser,
        "what to import and serve (an importer source; default %(default)s of $TAGSERVE_HOME "
        "or .tagserve)",
    )
    parser.add_argument("--offline-rows", type=int, default=Counts.offline_rows)
    parser.add_argument("--offline-rows-big", type=int, default=Counts.offline_rows_big)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SCENARIOS,
        help="run these parts only (default: all); a partial run's report says which",
    )
    args = parser.parse_args(argv)

    # A partial run never replaces the full run's results.
    stem = "latest" if not args.only else "parts-" + "-".join(args.only)

    def run_and_plot(args: argparse.Namespace) -> dict[str, Any]:
        report = run(args)
        args.out.mkdir(parents=True, exist_ok=True)
        plot(report, args.out / f"{stem}.png")
        return report

    return run_and_save(args, stem, run_and_plot, markdown)


def save_report(out: Path, stem: str, report: dict[str, Any], table: str) -> None:
    """Write ``stem``.json (every number) and ``stem``.md (the table) into ``out``, and print
    the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(strict_json.dumps(report, indent=1) + "\n")
    (out / f"{stem}.md").write_text(table)
    print()
    print(table)


if __name__ == "__main__":
    sys.exit(main())
