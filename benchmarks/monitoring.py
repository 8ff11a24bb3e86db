"""What live monitoring costs: `python -m benchmarks.monitoring [--order off,on,every1,...]`.

Serves our service once per setting in the order given, each server alone on 127.0.0.1, and
drives the single-record loads of ``benchmarks.serving`` with ``hey``: ``/predict`` at
concurrency 1 (p50) and under 32 clients (rows/s), ``/predict_batch`` under 32 clients.
Settings: ``off`` (``TAGSERVE_MONITOR=off``), ``on`` (the defaults: a window of 5,000 rows
tested every 30 s) and ``every1`` (tested every second: the background test always running
during the loads, the worst case). Repeating the settings (the default
off,on,every1,off,on,every1) shows how much a shared machine moves the numbers. Writes
``benchmarks/results/monitoring.{json,md}``: every run, and per setting the medians and their
ratios to ``off`` (target: p50 and rows/s at most 5 % worse).

Also measured in-process: what ``record`` costs a request, and what the background thread
spends encoding rows and testing a full window (``in_process`` in the JSON).

The model must have a drift reference (imported from a store holding
``clean_data:reference``, as after ``make demo``), else "on" measures nothing: the run stops.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks.hey import hey_path
from benchmarks.serving import (
    C1,
    C32,
    PREDICT,
    PREDICT_BATCH,
    BenchmarkError,
    Counts,
    common_arguments,
    fmt,
    machine,
    prepare,
    run_and_save,
    tagserve_results,
)

SETTINGS = {
    "off": {"TAGSERVE_MONITOR": "off"},
    "on": {"TAGSERVE_MONITOR": "on"},
    "every1": {"TAGSERVE_MONITOR": "on", "TAGSERVE_MONITOR_EVERY": "1"},
}
# The figures the project sets a target for: (scenario, system, metric, lower is better).
TARGETS = [
    (C1, PREDICT, "p50_ms", True),
    (C32, PREDICT, "rows_per_s", False),
    (C32, PREDICT_BATCH, "rows_per_s", False),
]
TOLERANCE = 0.05


def setting_order(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"settings are {', '.join(SETTINGS)}: not {text!r}")
    return names


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting, the median of each target figure over the repeats and its ratio to
    ``off`` (for a p50, ours/off; for rows/s, off/ours: above 1 is worse either way)."""
    out = []
    for scenario, system, metric, lower in TARGETS:
        medians = {}
        for setting in SETTINGS:
            values = [
                r[metric]
                for r in rows
                if (r["setting"], r["scenario"], r["system"]) == (setting, scenario, system)
                and r[metric] is not None
            ]
            if values:
                medians[setting] = statistics.median(values)
        base = medians.get("off")
        for setting, value in medians.items():
            worse = None
            if base and value:
                worse = value / base if lower else base / value
            out.append(
                {
                    "setting": setting,
                    "scenario": scenario,
                    "system": system,
                    "metric": metric,
                    "median": value,
                    "worse_than_off": worse,
                    "met": None if worse is None else worse <= 1 + TOLERANCE,
                }
            )
    return out


def markdown(report: dict[str, Any]) -> str:
    m, c = report["machine"], report["in_process"]
    lines = [
        f"Monitoring overhead, model `{report['model']}`, {m['date']}, commit "
        f"{m['git_commit'] or '?'}{' (--quick)' if report.get('quick') else ''}: {m['cpu']}, "
        f"{m['cores']} cores, 1-min load average at start "
        f"{fmt(m['load_average_1m_at_start'], 2)}, at end "
        f"{fmt(m.get('load_average_1m_at_end'), 2)}; {report['workers']} worker(s); order of "
        f"the runs: {', '.join(report['order'])}. Medians over the runs.",
        "",
        f"In-process: `record` {fmt(c['record_us_per_call'], 2)} µs a call (the request "
        f"path); the background thread encodes 1,000 single-record batches in "
        f"{fmt(c['encode_ms_per_1000_records'], 1)} ms; a leader cycle over a full window of "
        f"{c['window_rows']:,} rows (write, merge, test, export) takes "
        f"{fmt(c['cycle_ms_full_window'], 1)} ms.",
        "",
        "| setting | scenario | system | figure | median | x worse than off | <= 1.05 |",
        "| --- | --- | --- | --- | ---: | ---: | --- |",
    ]
    for s in report["summary"]:
        met = "" if s["met"] is None else ("met" if s["met"] else "**not met**")
        lines.append(
            f"| {s['setting']} | {s['scenario']} | {s['system']} | {s['metric']} | "
            f"{fmt(s['median'], 2)} | {fmt(s['worse_than_off'], 3)} | {met} |"
        )
    return "\n".join(lines) + "\n"


def in_process_costs(setup: Any, window: int = 5_000) -> dict[str, float]:
    """The monitoring's own costs in this process, on the model's reference and real rows:
    ``record`` per single-record call (the request path), the background thread's encoding
    per 1,000 single-record batches, and one leader cycle over a full window (write the
    worker's file, merge, test, export, write the result)."""
    import tempfile
    import time

    from inference.contract import json_records
    from serving.monitoring import Monitor
    from serving.settings import Settings

    # One worker: its cycle tests at once (a service's first test waits for every worker).
    settings = replace(Settings(), monitor_window=window, workers=1)
    folder = Path(tempfile.mkdtemp(dir=setup.work))
    settings = replace(settings, monitor_dir=str(folder))
    monitor = Monitor.for_model(Path(setup.model_dir).parent, settings)
    if not monitor.enabled:
        raise BenchmarkError(f"monitoring is off for {setup.tag}: {monitor.reason}")
    records = json_records(setup.X, setup.model.contract)
    answers = [{"prediction": float(p)} for p in setup.fast.predict(setup.X)]
    calls = min(len(records), window)
    began = time.perf_counter()
    for i in range(calls):
        monitor.record([records[i]], [answers[i]])
    record_us = (time.perf_counter() - began) / calls * 1e6
    began = time.perf_counter()
    monitor.collect()
    encode_ms = (time.perf_counter() - began) / calls * 1000 * 1000
    cycles = []
    for _ in range(5):
        monitor.window.changed = True
        began = time.perf_counter()
        monitor.cycle()
        cycles.append((time.perf_counter() - began) * 1000)
    return {
        "record_us_per_call": record_us,
        "encode_ms_per_1000_records": encode_ms,
        "cycle_ms_full_window": statistics.median(cycles),
        "window_rows": window,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    hey_path()
    machine_info = machine()
    counts = Counts().scaled(0.2 if args.quick else 0.5)
    setup = prepare(args.source, args.home)
    rows: list[dict[str, Any]] = []
    costs: dict[str, float] = {}
    try:
        reference = Path(setup.model_dir).parent / "monitoring" / "reference.json"
        if not reference.is_file():
            raise BenchmarkError(
                f"model {setup.tag} has no drift reference: import it from a store holding "
                "clean_data:reference (make demo) to measure monitoring"
            )
        costs = in_process_costs(setup)
        print(
            f"in-process: record {costs['record_us_per_call']:.2f} us a call; encoding "
            f"{costs['encode_ms_per_1000_records']:.1f} ms per 1,000 records; a leader cycle "
            f"over {costs['window_rows']} rows {costs['cycle_ms_full_window']:.1f} ms",
            flush=True,
        )
        for setting in args.order:
            served = replace(setup, env={**setup.env, **SETTINGS[setting]})
            print(f"monitoring {setting}", flush=True)
            for result in tagserve_results(served, counts, bulk=False):
                rows.append({"setting": setting, **asdict(result), "rows_per_s": result.rows_per_s})
    finally:
        if not args.keep:
            shutil.rmtree(setup.work, ignore_errors=True)
    machine_info["load_average_1m_at_end"] = os.getloadavg()[0]
    return {
        "machine": machine_info,
        "model": setup.tag,
        "workers": setup.workers,
        "quick": bool(args.quick),
        "counts": asdict(counts),
        "order": args.order,
        "summary": summarize(rows),
        "in_process": costs,
        "results": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.monitoring", description=__doc__)
    parser.add_argument(
        "--order",
        type=setting_order,
        default=["off", "on", "every1", "off", "on", "every1"],
        help="settings (off, on, every1) in the order they are served; default "
        "off,on,every1,off,on,every1",
    )
    common_arguments(parser, "an importer source")
    args = parser.parse_args(argv)
    return run_and_save(args, "monitoring", run, markdown)


if __name__ == "__main__":
    sys.exit(main())
