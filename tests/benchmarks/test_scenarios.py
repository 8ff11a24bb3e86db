"""What the benchmark's scenarios send and measure: bodies of distinct real rows, MLServer's
settings and V2 requests, the memory of a whole process tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from benchmarks.memory import MODEL_NAME, mlserver_folder, v2_request
from benchmarks.servers import _proc_rss, _proc_tree, tree_rss_mb
from benchmarks.serving import DATA, distinct_rows
from benchmarks.text_model import TEXT, record, reviews


@pytest.fixture(scope="module")
def diamonds() -> pd.DataFrame:
    return pd.read_parquet(DATA).drop(columns=["price"])


def test_bodies_hold_distinct_real_rows(diamonds: pd.DataFrame) -> None:
    rows = distinct_rows(diamonds, 10_000, seed=0)
    assert len(rows) == 10_000 and not rows.duplicated().any()
    real = set(map(tuple, diamonds.itertuples(index=False)))
    assert all(r in real for r in rows.head(500).itertuples(index=False))
    assert rows.equals(distinct_rows(diamonds, 10_000, seed=0))  # seeded
    assert not rows.equals(distinct_rows(diamonds, 10_000, seed=1))


def test_more_rows_than_distinct_ones_repeat_each_only_after_all_others(diamonds) -> None:
    unique = len(diamonds.drop_duplicates())
    rows = distinct_rows(diamonds, unique + 5_000, seed=1)
    assert not rows.head(unique).duplicated().any()
    assert not rows.tail(unique).duplicated().any()
    assert rows.duplicated().sum() == 5_000


def test_mlserver_gets_its_ports_in_process_and_the_mlflow_runtime(tmp_path) -> None:
    folder = mlserver_folder(tmp_path / "mls", tmp_path / "model", 8123)
    settings = json.loads((folder / "settings.json").read_text())
    model = json.loads((folder / "model-settings.json").read_text())
    assert settings["http_port"] == 8123 and settings["parallel_workers"] == 0
    assert len({settings["http_port"], settings["grpc_port"], settings["metrics_port"]}) == 3
    assert model == {
        "name": MODEL_NAME,
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": str(tmp_path / "model")},
    }


def test_a_v2_request_names_each_column_with_its_type() -> None:
    body = v2_request(
        {"carat": 0.3, "cut": "Ideal", "n": 3, "ok": True},
        {"carat": "double", "cut": "string", "n": "long", "ok": "boolean"},
    )
    assert body["parameters"] == {"content_type": "pd"}
    assert [(i["name"], i["datatype"], i["shape"], i["data"]) for i in body["inputs"]] == [
        ("carat", "FP64", [1], [0.3]),
        ("cut", "BYTES", [1], ["Ideal"]),
        ("n", "INT64", [1], [3]),
        ("ok", "BOOL", [1], [True]),
    ]


def test_the_text_model_data_is_seeded_text_and_a_number() -> None:
    frame = reviews(200)
    assert frame.equals(reviews(200)) and frame[TEXT].isna().any()
    assert frame[TEXT].dropna().nunique() > 100  # distinct reviews
    one = record()
    assert isinstance(one[TEXT], str) and one[TEXT] and isinstance(one["price"], float)


def test_the_memory_of_a_process_tree_counts_its_children() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; b = bytearray(200 * 2**20); time.sleep(60)"]
    )
    parent = subprocess.Popen(["sleep", "60"])
    try:
        deadline = time.monotonic() + 30
        while _proc_rss(child.pid) < 150 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.1)
        me = os.getpid()
        assert child.pid in _proc_tree(me) and parent.pid in _proc_tree(me)
        alone = _proc_rss(me) / 2**20
        assert tree_rss_mb(me) > alone + 150  # the child's 200 MB buffer is in the tree
        assert tree_rss_mb(child.pid) == pytest.approx(_proc_rss(child.pid) / 2**20, rel=0.05)
    finally:
        child.kill()
        parent.kill()
        child.wait()
        parent.wait()


def test_a_command_s_peak_memory_is_its_own_not_the_benchmark_s() -> None:
    """The benchmark process is large; a child's rusage would report its size."""
    import numpy as np

    from benchmarks.serving import timed_command

    held = np.ones(300 * 2**20 // 8)  # this process: over 300 MB
    script = (
        "b = bytearray(150 * 2**20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(1)"
    )
    seconds, peak, _ = timed_command([sys.executable, "-c", script], dict(os.environ))
    assert held.sum() > 0 and seconds >= 1
    assert 150 <= peak < 260
