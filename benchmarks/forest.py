"""In-process, side by side: the imported model on scikit-learn and on its exact fast path
(the compiled forest), per batch size: ``python -m benchmarks.forest [--model TAG]``.

For each size, the whole model call (``LoadedModel.predict`` on a frame) and the forest alone
(the preprocessed matrix), sklearn against the fast path (1 thread, and 2 threads sharing
one call's rows), median CPU and wall time of repeated calls, on distinct rows, after
checking that every answer is bit for bit sklearn's. Also the first call of the kernel in a
fresh process with an empty numba cache and with a warm one (start-up cost). The model comes
from the BentoML store (``$BENTOML_HOME``), imported with its fast path (``make demo``).
Results go to ``benchmarks/results/forest.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.serving import DATA, PROJECT_ROOT, RESULTS, distinct_rows, machine, save_report

SIZES = (1, 1000, 10_000, 50_000)
FIRST_CALL = """
import sys, time
import numpy as np
from inference import fastpath
from inference.bento import fastpath_folder, get_model
fast = fastpath.load(fastpath_folder(get_model(sys.argv[1])))
began = time.perf_counter()
fast.forest.output(np.zeros((3, fast.forest.n_features)))
print(time.perf_counter() - began)
"""


def medians(call: Callable[[], Any], runs: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms) of ``runs`` calls."""
    wall, cpu = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return float(np.median(wall) * 1000), float(np.median(cpu) * 1000)


def first_calls(tag: str) -> dict[str, float]:
    """Seconds of the kernel's first call in a fresh process: empty cache, then warm."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(PROJECT_ROOT)}
        for name in ("empty cache (compile)", "warm cache"):
            done = subprocess.run(
                [sys.executable, "-c", FIRST_CALL, tag],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0:
                raise RuntimeError(done.stderr.strip().splitlines()[-1])
            out[name] = float(done.stdout.strip().splitlines()[-1])
    return out


def run(tag: str, runs: int) -> dict[str, Any]:
    from inference.bento import fastpath_folder, get_model, mlflow_folder
    from inference.contract import coerce
    from inference.model import load_model

    info = machine()
    bento_model = get_model(tag)
    folder = mlflow_folder(bento_model)
    fast_model = load_model(folder, fast_folder=fastpath_folder(bento_model))
    if fast_model.fast is None:
        raise RuntimeError(f"{tag} has no fast path: {fast_model.fast_report.get('reason')}")
    sklearn = load_model(folder)
    fast, forest = fast_model.fast, sklearn.pipeline[-1]
    frame = pd.read_parquet(DATA)
    rows = distinct_rows(frame[sklearn.contract.features], max(SIZES), seed=0)
    X = coerce(rows, sklearn.contract)
    results = []
    for size in SIZES:
        part = X.head(size)
        matrix = fast.transform(part)
        want = sklearn.predict(part)
        for threads in (1, 2):
            fast_model.threads = threads
            got = fast_model.predict(part)
            if not np.array_equal(np.asarray(got).view(np.int64), want.view(np.int64)):
                raise RuntimeError(f"the fast path differs from sklearn at {size} rows")
        n = max(3, min(runs, 200_000 // size))
        fast_model.threads = 1
        timings = {
            "sklearn model": medians(lambda p=part: sklearn.predict(p), max(3, n // 3)),
            "fast model": medians(lambda p=part: fast_model.predict(p), n),
            "sklearn forest": medians(lambda m=matrix: forest.predict(m), max(3, n // 3)),
            "fast forest": medians(lambda m=matrix: fast.forest_output(m), n),
            "fast forest, 2 threads": medians(lambda m=matrix: fast.forest_output(m, 2), n),
        }
        numbers = {k: {"wall_ms": w, "cpu_ms": c} for k, (w, c) in timings.items()}
        results.append({"rows": size, **numbers})
        shown = ", ".join(f"{k} {w:.3f} ms" for k, (w, _) in timings.items())
        print(f"  {size:>6,} rows: {shown}", flush=True)
    info["load_average_1m_at_end"] = os.getloadavg()[0]
    return {"machine": info, "model": tag, "results": results, "first_call_s": first_calls(tag)}


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Model `{report['model']}`; {m['date']}, commit {m['git_commit'] or '?'}; {m['cpu']}, "
        f"{m['cores']} cores; 1-min load average {m['load_average_1m_at_start']:.2f} at start, "
        f"{m['load_average_1m_at_end']:.2f} at end. Median wall ms (CPU ms) per call.",
        "",
        "| rows | sklearn model | fast model | x | sklearn forest | fast forest | x "
        "| fast forest, 2 threads |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:

        def cell(key: str, r: dict[str, Any] = r) -> str:
            return f"{r[key]['wall_ms']:.3f} ({r[key]['cpu_ms']:.3f})"

        model_x = r["sklearn model"]["wall_ms"] / r["fast model"]["wall_ms"]
        forest_x = r["sklearn forest"]["wall_ms"] / r["fast forest"]["wall_ms"]
        lines.append(
            f"| {r['rows']:,} | {cell('sklearn model')} | {cell('fast model')} | {model_x:.1f} "
            f"| {cell('sklearn forest')} | {cell('fast forest')} | {forest_x:.1f} "
            f"| {cell('fast forest, 2 threads')} |"
        )
    first = report["first_call_s"]
    lines += ["", "First call of the kernel in a fresh process: "]
    lines[-1] += "; ".join(f"{k} {v:.2f} s" for k, v in first.items()) + "."
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.forest", description=__doc__)
    parser.add_argument("--model", default="tagserve-diamonds:latest", help="a BentoML tag")
    parser.add_argument("--runs", type=int, default=50, help="calls per timing (at most)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--quick", action="store_true", help="a fifth of the calls")
    args = parser.parse_args(argv)
    try:
        report = run(args.model, max(3, args.runs // 5) if args.quick else args.runs)
    except Exception as exc:  # a missing model, no fast path, a difference: one line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    save_report(args.out, "forest", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
