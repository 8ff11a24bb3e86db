"""The cost of the shadow to the live answers: 32 clients on ``/predict`` and
``/predict_batch`` against the service alone and with a candidate shadowing every request
(``TAGSERVE_SHADOW_FRACTION=1``), alternately (alone, shadow, alone, shadow: medians), side by
side in one run. Writes ``benchmarks/results/shadow.{md,json}``.

The candidate is the live model's artifact imported again under another name (the same
forest: a candidate that costs what the live model costs), unless ``--candidate-source``
names another importer source. The shadow's own counters (scored, dropped: shed when the
worker is busy) are read from ``/metrics`` after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from typing import Any

import httpx

from benchmarks.serving import (
    C32,
    PROJECT_ROOT,
    BenchmarkError,
    Counts,
    bentoml_server,
    common_arguments,
    fmt,
    import_model,
    machine,
    measure,
    prepare,
    run_and_save,
)

CANDIDATE_NAME = "tagserve-shadow-candidate"
ROUTES = (("/predict", "record"), ("/predict_batch", "record_list"))


def shadow_counts(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=30).text

    def total(name: str) -> float:
        pattern = rf"^{name}(\{{[^}}]*\}})?\s+(\S+)$"
        return sum(float(m[1]) for m in re.findall(pattern, text, flags=re.MULTILINE))

    return {
        "scored": total("tagserve_shadow_requests_total"),
        "dropped": total("tagserve_shadow_dropped_total"),
    }


def one_round(setup: Any, counts: Counts, config: str, env: dict[str, str], n: int) -> list[dict]:
    system = f"tagserve, {config}"
    out = []
    with bentoml_server("service:Tagserve", env, setup.work / f"{config}-{n}.log") as url:
        for path, body in ROUTES:
            before = shadow_counts(url)
            result = measure(
                C32,
                f"{system} {path}",
                f"{url}{path}",
                getattr(setup.bodies, body),
                requests=counts.clients_32,
                concurrency=32,
            )
            after = shadow_counts(url)
            print(
                f"      shadow: scored {after['scored'] - before['scored']:.0f}, dropped "
                f"{after['dropped'] - before['dropped']:.0f}",
                flush=True,
            )
            out.append(
                {
                    **result.__dict__,
                    "rows_per_s": result.rows_per_s,
                    "config": config,
                    "route": path,
                    "round": n,
                    "shadow_scored": after["scored"] - before["scored"],
                    "shadow_dropped": after["dropped"] - before["dropped"],
                }
            )
    return out


def live_path_cost(setup: Any, candidate: str, calls: int) -> list[dict[str, Any]]:
    """The live path's own cost per /predict-sized call, in-process (no HTTP, no other
    process: steadier than the served runs on a shared machine): the live model alone, and
    through ``ModelChoice`` with the candidate shadowing every call (its thread running)."""
    import time

    import bentoml

    from inference.bento import fastpath_folder, mlflow_folder
    from inference.contract import json_records
    from inference.model import load_model
    from serving.model_choice import ModelChoice
    from serving.routing import SHADOWED

    os_env = {k: setup.env[k] for k in ("BENTOML_HOME",)}
    previous = {k: os.environ.get(k) for k in os_env}
    os.environ.update(os_env)
    try:
        model = bentoml.models.get(candidate)
        shadow = load_model(mlflow_folder(model), setup.fast.contract, fastpath_folder(model))
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    records = json_records(setup.X.head(200), setup.fast.contract)
    choice = ModelChoice(setup.fast, setup.tag, shadow, candidate, shadow_fraction=1.0)
    configs = (
        ("live model alone", setup.fast.predict_records),
        ("shadow 1.0 (ModelChoice, thread running)", lambda r: choice.predict_records(r, SHADOWED)),
    )
    out = []
    for config, call in configs:
        for i in range(200):
            call([records[i % 200]])
        times = []
        for i in range(calls):
            began = time.perf_counter()
            call([records[i % 200]])
            times.append(time.perf_counter() - began)
            if i % 50 == 0:
                time.sleep(0.001)  # let the shadow thread run, as the event loop's waits do
        times.sort()
        row = {
            "config": config,
            "calls": calls,
            "p50_us": times[len(times) // 2] * 1e6,
            "p99_us": times[int(len(times) * 0.99)] * 1e6,
            "mean_us": sum(times) / len(times) * 1e6,
        }
        out.append(row)
        print(f"    in-process {config}: p50 {row['p50_us']:.1f} us, p99 {row['p99_us']:.1f} us")
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    counts = Counts().scaled(0.2) if args.quick else Counts()
    setup = prepare(args.source, args.home)
    try:
        print(f"shadow: importing the candidate ({args.candidate_source or args.source})")
        source = args.candidate_source or args.source
        name = [] if args.candidate_source else ["--name", CANDIDATE_NAME]
        candidate = import_model_named(source, name, setup.env)
        report: dict[str, Any] = {
            "machine": machine(),
            "model": setup.tag,
            "candidate": candidate,
            "workers": setup.workers,
            "requests": counts.clients_32,
            "results": [],
        }
        shadow_env = {
            **setup.env,
            "TAGSERVE_CANDIDATE": candidate,
            "TAGSERVE_SHADOW_FRACTION": "1",
        }
        report["in_process"] = live_path_cost(setup, candidate, counts.clients_32 * 5)
        for n in range(args.rounds):
            for config, env in (("alone", setup.env), ("shadow 1.0", shadow_env)):
                report["results"] += one_round(setup, counts, config, env, n)
        report["machine_end"] = machine()
        return report
    finally:
        if not args.keep:
            shutil.rmtree(setup.work, ignore_errors=True)


def import_model_named(source: str, name: list[str], env: dict[str, str]) -> str:
    if not name:
        return import_model(source, env)["tag"]
    # importers' --name: the same artifact as another BentoML model (another tag)
    done = subprocess.run(
        [sys.executable, "-m", "importers", source, *name, "--json"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise BenchmarkError(f"import of the candidate failed: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["tag"]


def medians(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for path, _ in ROUTES:
        by = {}
        for config in ("alone", "shadow 1.0"):
            runs = [r for r in report["results"] if r["config"] == config and r["route"] == path]
            by[config] = {
                key: statistics.median(r[key] for r in runs if r[key] is not None)
                for key in ("p50_ms", "p99_ms", "rows_per_s", "shadow_scored", "shadow_dropped")
            }
            by[config]["non_200"] = sum(r["non_200"] for r in runs)
        alone, shadow = by["alone"], by["shadow 1.0"]
        rows.append(
            {
                "route": path,
                "alone": alone,
                "shadow": shadow,
                "p99_ratio": shadow["p99_ms"] / alone["p99_ms"],
                "p50_ratio": shadow["p50_ms"] / alone["p50_ms"],
                "rows_per_s_ratio": shadow["rows_per_s"] / alone["rows_per_s"],
            }
        )
    return rows


def markdown(report: dict[str, Any]) -> str:
    m, end = report["machine"], report["machine_end"]
    lines = [
        f"Shadow overhead: model `{report['model']}`, candidate `{report['candidate']}`; "
        f"{report['workers']} worker(s); 32 clients, {report['requests']} requests a run; "
        f"{m['date']}, commit {m['git_commit']}; 1-min load average at start "
        f"{m['load_average_1m_at_start']}, at end {end['load_average_1m_at_start']} "
        f"({m['cores']} cores, shared with hey).",
        "",
        "| route | config | round | rows/s | p50 ms | p99 ms | non-200 | shadow scored | "
        "shadow dropped |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['route']} | {r['config']} | {r['round']} | {fmt(r['rows_per_s'], 0)} | "
            f"{fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {r['non_200']} | "
            f"{r['shadow_scored']:.0f} | {r['shadow_dropped']:.0f} |"
        )
    lines += [
        "",
        "| route | p50 shadow / alone | p99 shadow / alone | rows/s shadow / alone | "
        "shadowed (scored / sent) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in medians(report):
        s = row["shadow"]
        sent = s["shadow_scored"] + s["shadow_dropped"]
        share = f"{s['shadow_scored'] / sent:.0%}" if sent else "-"
        lines.append(
            f"| {row['route']} | {row['p50_ratio']:.2f}x | {row['p99_ratio']:.2f}x | "
            f"{row['rows_per_s_ratio']:.2f}x | {share} |"
        )
    lines += [
        "",
        "In-process, one record a call (the live path's own cost, the shadow thread running):",
        "",
        "| live path | calls | p50 us | p99 us | mean us |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in report.get("in_process", []):
        lines.append(
            f"| {r['config']} | {r['calls']} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | "
            f"{r['mean_us']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shadow", description=__doc__)
    common_arguments(parser, "the live model's source")
    parser.add_argument(
        "--candidate-source",
        default=None,
        help="the candidate's importer source (default: the live artifact under another name)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternations (default 2)")
    args = parser.parse_args(argv)

    def run_with_medians(args: argparse.Namespace) -> dict[str, Any]:
        report = run(args)
        report["medians"] = medians(report)
        return report

    return run_and_save(args, "shadow", run_with_medians, markdown)


if __name__ == "__main__":
    sys.exit(main())
