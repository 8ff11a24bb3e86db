"""Load shedding on ``/predict`` under many clients: `python -m benchmarks.load` (make bench-load).

The prod model is imported into a throw-away ``BENTOML_HOME`` and served by
``bentoml serve service:Tagserve`` on 127.0.0.1, once per configuration: without a budget
(``TAGSERVE_PREDICT_QUEUE`` so large that nothing is shed: every client queues) and with the
default one (``serving.settings.Settings``). Against each, ``hey`` (a compiled load generator,
Debian package ``hey``) runs ``--clients`` clients posting one record to ``/predict`` for
``--duration`` seconds, in two shapes:

- ``paced``: each client sends at most one request a second (``hey -q 1``), as clients that
  honour ``Retry-After: 1`` do once they are shed (tagserve's clients do); ten hey processes
  started a tenth of a second apart, so that the clients do not all tick together;
- ``greedy``: each client sends its next request as soon as it has an answer, a 503 included
  (hey ignores ``Retry-After``): the worst case for the server, which spends its time refusing.

Per configuration: requests answered, accepted (200) with their p50/p99/max latency, 503s
(and how fast they came), other answers, and accepted rows/s. Load generator and server share
this machine's cores. Results go to ``benchmarks/results/load.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.servers import start_server
from inference import strict_json
from inference.cli import OneLineArgumentParser, run_command
from inference.errors import TagserveError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
DATA = PROJECT_ROOT / "data" / "diamonds.parquet"
DEFAULT_SOURCE = "local:tagserve-diamonds/model_export:prod"
UNBOUNDED_QUEUE = 1_000_000  # "no budget": more than any load generator here can send


class BenchmarkError(TagserveError):
    """Something the benchmark cannot run without (one line, exit 1)."""


@dataclass(frozen=True)
class Configuration:
    """One way of serving: a name and the ``TAGSERVE_*`` settings it sets."""

    name: str
    env: dict[str, str]
    budget: str  # as the table shows it


SHAPES = {"paced": ["-q", "1"], "greedy": []}  # hey's flags for each load shape
STAGGER = 10  # paced clients: this many hey processes, started 1/STAGGER s apart


@dataclass
class Outcome:
    """What ``hey`` recorded against one configuration under one load shape."""

    configuration: str
    budget: str
    shape: str
    clients: int
    seconds: float
    answered: int
    accepted: int
    shed_503: int
    other: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    shed_p50_ms: float | None

    @property
    def rows_per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


def configurations(queues: list[str]) -> list[Configuration]:
    """``none`` (nothing shed), ``default`` (the settings' default) or a queue length."""
    from serving.settings import Settings

    found = []
    for queue in queues:
        if queue == "none":
            env = {"TAGSERVE_PREDICT_QUEUE": str(UNBOUNDED_QUEUE)}
            found.append(Configuration("no budget", env, "none"))
        elif queue == "default":
            budget = Settings().predict_budget
            found.append(Configuration("default budget", {}, f"{budget} per worker"))
        elif queue.isdigit():
            env = {"TAGSERVE_PREDICT_QUEUE": queue}
            budget = Settings(predict_queue=int(queue)).predict_budget
            found.append(Configuration(f"queue {queue}", env, f"{budget} per worker"))
        else:
            raise BenchmarkError(f"--queues takes none, default or whole numbers, not {queue!r}")
    return found


def summarize(
    configuration: Configuration, shape: str, clients: int, seconds: float, rows: str
) -> Outcome:
    """An :class:`Outcome` from hey's CSV (one line per answer: ``response-time`` in seconds,
    ``status-code``, ...). hey leaves transport errors out of its CSV."""
    frame = pd.read_csv(io.StringIO(rows))
    status = frame["status-code"].to_numpy()
    times_ms = frame["response-time"].to_numpy() * 1000
    accepted, shed = times_ms[status == 200], times_ms[status == 503]

    def pct(values: np.ndarray, q: float) -> float | None:
        return float(np.percentile(values, q)) if len(values) else None

    return Outcome(
        configuration=configuration.name,
        budget=configuration.budget,
        shape=shape,
        clients=clients,
        seconds=seconds,
        answered=len(frame),
        accepted=len(accepted),
        shed_503=len(shed),
        other=int(((status != 200) & (status != 503)).sum()),
        p50_ms=pct(accepted, 50),
        p99_ms=pct(accepted, 99),
        max_ms=float(accepted.max()) if len(accepted) else None,
        shed_p50_ms=pct(shed, 50),
    )


def hey_command(
    url: str, body: Path, *, clients: int, seconds: float, flags: list[str]
) -> list[str]:
    """``hey`` POSTing ``body`` to ``url`` from ``clients`` workers for ``seconds``."""
    return [
        "hey",
        *flags,
        "-z",
        f"{seconds:g}s",
        "-c",
        str(clients),
        "-t",
        "120",
        "-m",
        "POST",
        "-T",
        "application/json",
        "-D",
        str(body),
        url,
    ]


def hey(
    url: str, body: Path, *, clients: int, seconds: float, csv_out: bool, shape: str = "greedy"
) -> str:
    """hey's per-answer CSV (or its summary) for ``clients`` clients of ``shape``.

    Paced clients come from ``STAGGER`` hey processes started evenly over one second: hey's
    ``-q`` workers all tick together, and 400 clients arriving in one burst per second are
    not what clients waiting out ``Retry-After`` with jitter look like.
    """
    groups = STAGGER if shape == "paced" and clients >= STAGGER else 1
    flags = [*SHAPES[shape], *(["-o", "csv"] if csv_out else [])]
    sizes = [clients // groups + (i < clients % groups) for i in range(groups)]
    processes = []
    for i, size in enumerate(sizes):
        if i:
            time.sleep(1.0 / groups)
        cmd = hey_command(url, body, clients=size, seconds=seconds, flags=flags)
        processes.append(
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=seconds + 300)
        if process.returncode != 0:
            raise BenchmarkError(f"hey failed ({process.returncode}): {err.strip()[-300:]}")
        outputs.append(out)
    if not csv_out:
        return "\n".join(outputs)
    header, *_ = outputs[0].splitlines()
    rows = [line for out in outputs for line in out.splitlines()[1:] if line.strip()]
    return "\n".join([header, *rows]) + "\n"


def import_model(source: str, env: dict[str, str]) -> tuple[str, Path]:
    """The BentoML tag and folder of ``source`` imported by the project's importer."""
    from benchmarks import serving

    try:
        imported = serving.import_model(source, env)
    except serving.BenchmarkError as exc:
        raise BenchmarkError(str(exc)) from None
    return imported["tag"], Path(imported["path"])


def one_record(model_folder: Path, work: Path) -> Path:
    """A JSON file holding the first row of the model's own serving example as a record
    (valid for its signature by construction: the importer checked it)."""
    from inference.constants import MLFLOW_FOLDER, SERVING_EXAMPLE

    example = json.loads((model_folder / MLFLOW_FOLDER / SERVING_EXAMPLE).read_text())
    split = example["dataframe_split"]
    path = work / "record.json"
    path.write_text(json.dumps(dict(zip(split["columns"], split["data"][0], strict=True))))
    return path


@contextlib.contextmanager
def served(tag: str, configuration: Configuration, env: dict[str, str], log: Path) -> Iterator[str]:
    """``bentoml serve`` of ``tag`` with ``configuration``'s settings, stopped afterwards."""
    print(f"  serving {tag} ({configuration.name}) ...", flush=True)
    try:
        server = start_server(
            "service:Tagserve",
            env={**env, "TAGSERVE_MODEL": tag, **configuration.env},
            cwd=PROJECT_ROOT,
            log=log,
        )
    except RuntimeError as exc:
        raise BenchmarkError(f"bentoml serve ({configuration.name}): {exc}") from None
    try:
        yield server.url
    finally:
        server.stop()


def machine() -> dict[str, Any]:
    """Where and with what the numbers were taken."""
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("bentoml", "scikit-learn"):
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            versions[package] = importlib_metadata.version(package)
    hey_version = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "hey"], capture_output=True, text=True
    ).stdout.strip()
    commit = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_1m_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "versions": {**versions, "hey": hey_version or "unknown"},
        "git_commit": commit,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(outcomes: list[Outcome]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| /predict | budget | clients | answered | accepted | 503s | other | "
        "accepted p50 ms | p99 ms | max ms | 503 p50 ms | accepted rows/s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.configuration} | {o.budget} | {o.clients} {o.shape} | {o.answered:,} | "
            f"{o.accepted:,} | {o.shed_503:,} | {o.other} | {fmt(o.p50_ms)} | "
            f"{fmt(o.p99_ms)} | {fmt(o.max_ms)} | {fmt(o.shed_p50_ms)} | {o.rows_per_s:,.0f} |"
        )
    return "\n".join(lines)


def measure(
    url: str, body: Path, configuration: Configuration, shape: str, args: argparse.Namespace
) -> Outcome:
    """One hey run against a served configuration, after a short warm-up."""
    hey(f"{url}/predict", body, clients=4, seconds=2, csv_out=False)
    print(f"  hey: {args.clients} {shape} clients on /predict for {args.duration:g} s", flush=True)
    rows = hey(
        f"{url}/predict",
        body,
        clients=args.clients,
        seconds=args.duration,
        csv_out=True,
        shape=shape,
    )
    outcome = summarize(configuration, shape, args.clients, args.duration, rows)
    print(
        f"    {outcome.accepted:,} accepted (p50 {fmt(outcome.p50_ms)} ms, "
        f"p99 {fmt(outcome.p99_ms)} ms), {outcome.shed_503:,} 503s",
        flush=True,
    )
    return outcome


def run(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("hey") is None:
        raise BenchmarkError("hey is not installed: `apt-get install hey` (make bench-load does)")
    chosen = configurations(args.queues.split(","))
    shapes = args.shapes.split(",")
    if unknown := set(shapes) - set(SHAPES):
        raise BenchmarkError(f"--shapes takes {', '.join(SHAPES)}, not {sorted(unknown)}")
    about = machine()  # the load average before this run adds its own
    work = Path(tempfile.mkdtemp(prefix="tagserve-load-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTOML_", "TAGSERVE_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        BENTOML_HOME=str(work / "bentoml"),
        BENTOML_DO_NOT_TRACK="true",
        PYTHONPATH=str(PROJECT_ROOT),
        TMPDIR=str(work),
    )
    if os.environ.get("TAGSERVE_HOME"):
        env["TAGSERVE_HOME"] = os.environ["TAGSERVE_HOME"]
    try:
        print(f"load: importing {args.source} into {work / 'bentoml'}", flush=True)
        tag, model_folder = import_model(args.source, env)
        body = one_record(model_folder, work)
        outcomes = []
        for configuration in chosen:
            for shape in shapes:
                # A fresh server per run: none inherits the queue the previous one left.
                with served(tag, configuration, env, work / "server.log") as url:
                    outcomes.append(measure(url, body, configuration, shape, args))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "machine": about,
        "model": tag,
        "duration_s": args.duration,
        "shapes": {shape: ["hey", *flags] for shape, flags in SHAPES.items()},
        "outcomes": [{**asdict(o), "rows_per_s": o.rows_per_s} for o in outcomes],
        "table": table(outcomes),
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return (
        f"Model `{report['model']}`; {m['date']}, commit {m['git_commit']}; "
        f"{report['duration_s']:g} s per configuration.\n"
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {versions}; "
        f"1-min load average at start {m['load_average_1m_at_start']:.2f}. "
        "hey and the server share the cores.\n\n" + report["table"] + "\n"
    )


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m benchmarks.load",
        description="/predict under many concurrent clients (hey), with and without the "
        "load-shedding budget; writes benchmarks/results/load.{json,md}.",
    )
    parser.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        help="the model, as the importer takes it (default %(default)s)",
    )
    parser.add_argument("--clients", type=int, default=400, help="hey's workers (default 400)")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds per configuration (default 20)"
    )
    parser.add_argument(
        "--queues",
        default="none,default",
        help="configurations: none (no budget), default, or TAGSERVE_PREDICT_QUEUE values, "
        "comma-separated (default %(default)s)",
    )
    parser.add_argument(
        "--shapes",
        default="paced,greedy",
        help="load shapes: paced (<= 1 request/s per client), greedy (no pause), "
        "comma-separated (default %(default)s)",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS / "load", help="writes OUTPUT.json and OUTPUT.md"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    def command(args: argparse.Namespace) -> int:
        if args.clients < 1 or args.duration <= 0:
            raise BenchmarkError("--clients and --duration must be more than 0")
        report = run(args)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".json").write_text(strict_json.dumps(report, indent=2) + "\n")
        args.output.with_suffix(".md").write_text(markdown(report))
        print("\n" + report["table"])
        print(f"\nwrote {args.output}.json and {args.output}.md")
        return 0

    args = build_parser().parse_args(argv)
    return run_command(lambda: command(args))


if __name__ == "__main__":
    sys.exit(main())
