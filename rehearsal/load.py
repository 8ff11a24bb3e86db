"""``python -m rehearsal.load``: the client host's bounded load. A fixed number of client
threads per model, each sending ``/predict`` with one distinct real row at a time (the data
set's rows in a seeded order, each thread its own share), paced, until the stop file appears.
Every answer is recorded: start time, seconds, status (0: a transport error), the error's
kind, and the ``X-Tagserve-Model`` that answered. Written as JSON lines at the end."""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from rehearsal.bentos import PROJECT_ROOT

DATA = {
    "diamonds": PROJECT_ROOT / "data" / "diamonds.parquet",
    "penguins": PROJECT_ROOT / "data" / "penguins.csv",
}
SEED = 20261206
MODEL_HEADER = "x-tagserve-model"


def rows_of(model: str, base: str) -> list[dict[str, Any]]:
    """The data set's rows as records of the served model's features, shuffled (seeded);
    rows with a missing value, or outside the model's domain (the shipped data holds a few
    impossible diamonds the pipeline's own cleaning drops), are left out, so every request
    is valid."""
    path = DATA[model]
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    deadline = time.monotonic() + 120
    while True:
        try:
            meta = httpx.get(f"{base}/metadata", timeout=10)
            if meta.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{base}/metadata did not answer")
        time.sleep(0.5)
    features = meta.json()["feature_columns"]
    frame = frame[features].dropna().drop_duplicates()
    frame = frame[within(frame, (meta.json().get("domain") or {}).get("columns") or {})]
    frame = frame.sample(frac=1.0, random_state=SEED)
    return json.loads(frame.to_json(orient="records"))


BOUNDS = {
    "minimum": lambda values, bound: values >= bound,
    "maximum": lambda values, bound: values <= bound,
    "exclusiveMinimum": lambda values, bound: values > bound,
    "exclusiveMaximum": lambda values, bound: values < bound,
}


def within(frame: pd.DataFrame, domain: dict[str, dict[str, Any]]) -> pd.Series:
    """Where the rows of ``frame`` lie within ``domain`` (``/metadata``'s: a column's
    ``categories``, or its ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``)."""
    ok = pd.Series(True, index=frame.index)
    for name, rule in domain.items():
        if name not in frame.columns:
            continue
        values = frame[name]
        if "categories" in rule:
            ok &= values.isin(rule["categories"])
        for key, inside in BOUNDS.items():
            if key in rule:
                ok &= inside(values, rule[key])
    return ok


def client(
    base: str, rows: list[dict], model: str, pace: float, stop: Path, out: list[list]
) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        index = 0
        while not stop.exists():
            row = rows[index % len(rows)]
            index += 1
            started = time.time()
            status, error, answered = 0, "", ""
            try:
                answer = http.post("/predict", json=row)
                status, answered = answer.status_code, answer.headers.get(MODEL_HEADER, "")
                if status >= 300:
                    error = answer.text[:200]
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            out.append([started, time.time() - started, model, status, error, answered])
            time.sleep(pace)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal.load")
    parser.add_argument("--diamonds", required=True, help="base URL of the diamonds model")
    parser.add_argument("--penguins", required=True, help="base URL of the penguins model")
    parser.add_argument("--clients", default="6,2", help="threads: diamonds,penguins")
    parser.add_argument("--pace", type=float, default=0.01, help="seconds between requests")
    parser.add_argument("--stop", type=Path, required=True, help="stop once this file exists")
    parser.add_argument("--ready", type=Path, required=True, help="touched once sending")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    bases = {"diamonds": args.diamonds, "penguins": args.penguins}
    counts = dict(zip(bases, (int(n) for n in args.clients.split(",")), strict=True))
    threads, records = [], []
    for model, base in bases.items():
        rows = rows_of(model, base)
        share = math.ceil(len(rows) / counts[model])
        for k in range(counts[model]):
            out: list[list] = []
            records.append(out)
            mine = rows[k * share : (k + 1) * share]
            threads.append(
                threading.Thread(target=client, args=(base, mine, model, args.pace, args.stop, out))
            )
    for thread in threads:
        thread.start()
    args.ready.touch()
    for thread in threads:
        thread.join()
    with args.out.open("w") as file:
        for out in records:
            for record in out:
                file.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
