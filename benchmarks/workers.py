"""How many workers our service should run: `python -m benchmarks.workers [--workers 1,2,1,2]`.

Serves, once per worker count in the order given (``TAGSERVE_WORKERS``), the framework floor
and then our service, each server alone on 127.0.0.1, and drives the single-record loads of
``benchmarks.serving`` with ``hey``: ``/predict`` at concurrency 1 and under 32 clients (the
floor and ours), ``/predict_batch`` under 32 clients (ours). The floor shows what the worker
count does once the model call costs next to nothing. Repeating the counts (the default
1,2,1,2) shows how much a shared machine moves the numbers. Prints and writes
``benchmarks/results/workers.{json,md}``: every run, and per count the medians and their
ratios to the first count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from dataclasses import asdict, replace
from typing import Any

from benchmarks.hey import hey_path
from benchmarks.serving import (
    Counts,
    common_arguments,
    floor_results,
    fmt,
    machine,
    prepare,
    run_and_save,
    tagserve_results,
)


def worker_counts(text: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]`` (argparse type: each a whole number of at least 1)."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not whole numbers: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be 1 or more: {text!r}")
    return counts


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The median p50, p99 and rows/s of each load at each worker count (over the repeats),
    with their ratios to the first count measured: a ``p50 ratio`` below 1 and a ``rows/s
    ratio`` above 1 are better."""
    groups: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["workers"], r["scenario"], r["system"]), []).append(r)
    summary = []
    for (workers, scenario, system), runs in groups.items():
        medians = {
            key: median([r[key] for r in runs if r[key] is not None])
            for key in ("p50_ms", "p99_ms", "rows_per_s")
        }
        non_200 = sum(r["non_200"] for r in runs)
        summary.append(
            {"workers": workers, "scenario": scenario, "system": system, "runs": len(runs)}
            | medians
            | {"non_200": non_200}
        )
    first = rows[0]["workers"] if rows else None
    base = {(s["scenario"], s["system"]): s for s in summary if s["workers"] == first}
    for s in summary:
        ref = base.get((s["scenario"], s["system"]))
        s["p50_ratio"] = ratio(s["p50_ms"], ref and ref["p50_ms"])
        s["rows_per_s_ratio"] = ratio(s["rows_per_s"], ref and ref["rows_per_s"])
    return summary


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value and reference else None


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Workers, model `{report['model']}`, {m['date']}, commit {m['git_commit'] or '?'}"
        f"{' (--quick)' if report.get('quick') else ''}: {m['cpu']}, {m['cores']} cores, "
        f"1-min load average at start {fmt(m['load_average_1m_at_start'], 2)}, at end "
        f"{fmt(m.get('load_average_1m_at_end'), 2)}; order of the "
        f"runs: {', '.join(map(str, report['order']))} workers. Medians over the runs.",
        "",
        "| workers | scenario | system | runs | rows/s | p50 ms | p99 ms | non-200 | "
        "p50 vs first | rows/s vs first |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in sorted(report["summary"], key=lambda s: (s["system"], s["scenario"], s["workers"])):
        lines.append(
            f"| {s['workers']} | {s['scenario']} | {s['system']} | {s['runs']} | "
            f"{fmt(s['rows_per_s'], 0)} | {fmt(s['p50_ms'], 2)} | {fmt(s['p99_ms'], 2)} | "
            f"{s['non_200']} | {fmt(s['p50_ratio'], 2)} | {fmt(s['rows_per_s_ratio'], 2)} |"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    hey_path()  # no load generator: say so before anything starts
    machine_info = machine()
    # half the requests of benchmarks.serving per load (each count is served twice)
    counts = Counts().scaled(0.2 if args.quick else 0.5)
    setup = prepare(args.source, args.home)
    rows: list[dict[str, Any]] = []
    try:
        for workers in args.workers:
            served = replace(
                setup, env={**setup.env, "TAGSERVE_WORKERS": str(workers)}, workers=workers
            )
            results = floor_results(served, counts) + tagserve_results(served, counts, bulk=False)
            for result in results:
                rows.append({"workers": workers, **asdict(result), "rows_per_s": result.rows_per_s})
    finally:
        if not args.keep:
            shutil.rmtree(setup.work, ignore_errors=True)
    machine_info["load_average_1m_at_end"] = os.getloadavg()[0]
    return {
        "machine": machine_info,
        "model": setup.tag,
        "quick": bool(args.quick),
        "counts": asdict(counts),
        "order": args.workers,
        "summary": summarize(rows),
        "results": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__)
    parser.add_argument(
        "--workers",
        type=worker_counts,
        default=[1, 2, 1, 2],
        help="worker counts, in the order they are served (repeat them to see the noise); "
        "default 1,2,1,2",
    )
    common_arguments(parser, "an importer source")
    args = parser.parse_args(argv)
    return run_and_save(args, "workers", run, markdown)


if __name__ == "__main__":
    sys.exit(main())
