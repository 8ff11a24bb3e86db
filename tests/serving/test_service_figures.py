"""The service's figures cover the whole service and mean what they say, against a real
``bentoml serve`` with 2 workers, a candidate as a 30 % canary and shadowing every other
request: every worker's ``/monitoring`` gives the same candidate section, over every worker's
shadow; the live model's prediction drift counts its own answers only, the canary's are
tested apart; the first drift test covers both workers. The shadow metrics of a regressor
and of a classifier: only those that mean something for the task."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from inference import drift
from inference.compare import Comparison
from tests.helpers.candidates import metric
from tests.helpers.marks import starts_server
from tests.helpers.monitoring import FEATURES, MonitoredModel, as_records, diamonds_with_gaps
from tests.helpers.service_models import PROJECT_ROOT, PYTHON, bentoml_server, subprocess_env

CANARY_PERCENT = 30
CANDIDATE_VERSION = "canarycopy"


@dataclasses.dataclass(frozen=True)
class CanaryServer:
    url: str
    live: str
    candidate: str
    model_folder: Path  # the live model in the server's BentoML store


def copy_as_candidate(home: Path, tag: str) -> str:
    """A copy of the model ``tag`` in the BentoML home ``home`` under another version, not
    prod: a candidate of the same contract (and the same answers). Its tag."""
    name, version = tag.split(":")
    target = home / "models" / name / CANDIDATE_VERSION
    shutil.copytree(home / "models" / name / version, target)
    info = yaml.safe_load((target / "model.yaml").read_text())
    info["version"] = CANDIDATE_VERSION
    info.setdefault("labels", {})["stage"] = "none"
    (target / "model.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
    return f"{name}:{CANDIDATE_VERSION}"


@pytest.fixture(scope="module")
@starts_server
def canary(
    monitored: MonitoredModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CanaryServer]:
    """The monitored model (it has a drift reference) served by 2 workers with a copy of it
    as the candidate, in a BentoML home of its own (the session's stays as it is)."""
    root = tmp_path_factory.mktemp("canary")
    home = root / "bentoml"
    shutil.copytree(monitored.bentoml_home, home, ignore=shutil.ignore_patterns("prom*"))
    candidate = copy_as_candidate(home, monitored.tag)
    env = subprocess_env(
        dataclasses.replace(monitored, bentoml_home=home),  # type: ignore[arg-type]
        TAGSERVE_MODEL=monitored.tag,
        TAGSERVE_CANDIDATE=candidate,
        TAGSERVE_CANARY_PERCENT=str(CANARY_PERCENT),
        TAGSERVE_SHADOW_FRACTION="1",
        TAGSERVE_WORKERS="2",
        TAGSERVE_MONITOR_EVERY="1",
        TAGSERVE_MONITOR_WINDOW="5000",
        TAGSERVE_MONITOR_MIN_ROWS="200",
    )
    log = root / "bentoml-serve.log"
    with bentoml_server("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=log) as url:
        folder = home / "models" / Path(*monitored.tag.split(":"))
        yield CanaryServer(url, monitored.tag, candidate, folder)


def monitoring(url: str) -> dict[str, Any]:
    """``GET /monitoring`` on a connection of its own (so either worker may answer)."""
    with httpx.Client(timeout=10, headers={"Connection": "close"}) as client:
        return client.get(f"{url}/monitoring").json()


def test_the_first_drift_test_covers_every_worker(canary: CanaryServer) -> None:
    deadline, status = time.monotonic() + 60, {}
    while time.monotonic() < deadline:
        status = monitoring(canary.url)
        if status.get("evaluated_at"):
            break
        time.sleep(0.2)
    window = status["window"]
    assert (window["workers"], window["workers_expected"]) == (2, 2), window
    assert len(set(window["worker_pids"])) == 2


@dataclasses.dataclass
class Sent:
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    answers: list[float] = dataclasses.field(default_factory=list)
    by_candidate: list[bool] = dataclasses.field(default_factory=list)


def send_all(canary: CanaryServer, records: list[dict[str, Any]]) -> Sent:
    """``records`` over /predict, /predict_batch and /invocations, from 4 connections, each
    request with a key of its own; which model answered each row, from the answer's header."""
    calls: list[tuple[str, Any, list[dict[str, Any]]]] = []
    for i in range(0, 100):
        calls.append(("/predict", records[i], [records[i]]))
    for i in range(100, 700, 20):
        calls.append(("/predict_batch", records[i : i + 20], records[i : i + 20]))
    for i in range(700, 800, 10):
        part = records[i : i + 10]
        calls.append(("/invocations", {"dataframe_records": part}, part))
    clients = [httpx.Client(base_url=canary.url, timeout=60) for _ in range(4)]

    def post(i: int) -> tuple[list[dict[str, Any]], list[float], bool]:
        path, body, rows = calls[i]
        got = clients[i % 4].post(path, json=body, headers={"X-Request-Key": f"k{i}"})
        assert got.status_code == 200, got.text
        answer = got.json()
        values = answer["predictions"] if path == "/invocations" else answer
        values = [v["prediction"] if isinstance(v, dict) else v for v in np.atleast_1d(values)]
        return rows, values, got.headers["x-tagserve-model"] == canary.candidate

    sent = Sent()
    try:
        with ThreadPoolExecutor(4) as pool:
            for rows, values, by_candidate in pool.map(post, range(len(calls))):
                sent.rows += rows
                sent.answers += values
                sent.by_candidate += [by_candidate] * len(rows)
    finally:
        for client in clients:
            client.close()
    return sent


@pytest.fixture(scope="module")
def sent(canary: CanaryServer) -> Sent:
    data = diamonds_with_gaps().sample(800, random_state=11)
    return send_all(canary, as_records(data))


def settled(url: str, ready: Any, timeout: float = 90) -> dict[str, Any]:
    deadline, status = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        status = monitoring(url)
        if ready(status):
            return status
        time.sleep(0.3)
    raise AssertionError(f"not settled in {timeout} s: {json.dumps(status)[:2000]}")


def test_prediction_drift_counts_the_live_answers_and_tests_the_canarys_apart(
    canary: CanaryServer, sent: Sent
) -> None:
    mask = np.array(sent.by_candidate)
    assert 0 < mask.sum() < len(mask)  # both models answered some
    status = settled(canary.url, lambda s: (s.get("window") or {}).get("rows") == len(mask))
    window = status["window"]
    assert (window["live_rows"], window["candidate_rows"]) == ((~mask).sum(), mask.sum())
    assert status["prediction"]["rows"] == (~mask).sum()
    assert status["candidate_prediction"]["rows"] == mask.sum()
    # The same tests run offline on the live model's answers alone.
    reference = drift.Reference.load(canary.model_folder / drift.MONITORING_FOLDER)
    numbers = {"carat", "depth", "table", "x", "y", "z"}
    columns = {
        f: np.array([r.get(f) for r in sent.rows], dtype=np.float64 if f in numbers else object)
        for f in FEATURES
    }
    answers = np.array(sent.answers, dtype=np.float64)
    expected = drift.evaluate(reference, columns, answers[~mask], min_rows=200)
    assert status["prediction"]["p_value"] == pytest.approx(
        expected["prediction"]["p_value"], rel=1e-9
    )
    for f in FEATURES:  # the features: every row, whichever model answered
        assert status["features"][f]["rows"] == len(mask)
    canary_expected = drift.prediction_report(reference, answers[mask], min_rows=200)
    assert status["candidate_prediction"]["p_value"] == pytest.approx(
        canary_expected["p_value"], rel=1e-9
    )


def test_every_worker_gives_the_same_whole_service_candidate_section(
    canary: CanaryServer, sent: Sent
) -> None:
    live_rows = len(sent.by_candidate) - sum(sent.by_candidate)
    status = settled(
        canary.url, lambda s: s["candidate"]["shadow"]["rows"] == live_rows, timeout=60
    )
    time.sleep(2.5)  # past the workers' next sharing of an idle shadow: nothing may move
    sections = [monitoring(canary.url)["candidate"] for _ in range(8)]
    assert all(section == sections[0] for section in sections[1:]), sections
    section = sections[0]
    assert section["scope"] == "service" and section == status["candidate"]
    shadow = section["shadow"]
    assert shadow["rows"] == live_rows == metric(canary.url, "tagserve_shadow_rows_total")
    assert shadow["calls_scored"] == metric(canary.url, "tagserve_shadow_requests_total")
    assert shadow["calls_dropped"] == 0 and shadow["abs_diff"]["max"] == 0.0  # a copy of it
    assert shadow["workers"] in (1, 2)  # the workers that shadowed (as the kernel spread them)


def test_a_regressor_exports_no_agreement_metric(canary: CanaryServer, sent: Sent) -> None:
    text = httpx.get(f"{canary.url}/metrics", timeout=30).text
    assert "tagserve_shadow_abs_diff_count" in text
    assert "tagserve_shadow_agreed_rows" not in text
    assert "tagserve_shadow_agreement_ratio" not in text


EXPOSITION = """
import os, sys, tempfile
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp()
from serving.metrics import shadow_metrics
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
shadow_metrics(sys.argv[1])
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
print(generate_latest(registry).decode())
"""


@pytest.mark.parametrize(
    ("task", "present", "absent"),
    [
        ("regression", "tagserve_shadow_abs_diff_bucket", "tagserve_shadow_agreed_rows"),
        ("classification", "tagserve_shadow_agreed_rows_total", "tagserve_shadow_abs_diff"),
    ],
)
def test_shadow_metrics_are_those_of_the_task(
    task: str, present: str, absent: str, tmp_path: Path
) -> None:
    """What ``/metrics`` exports (prometheus_client's multiprocess collector, as BentoML's)
    once a worker made the shadow metrics of a ``task`` model."""
    done = subprocess.run(
        [PYTHON, "-c", EXPOSITION, task],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert present in done.stdout and "tagserve_shadow_rows_total" in done.stdout
    assert absent not in done.stdout
    if task == "regression":
        assert "tagserve_shadow_agreement_ratio" not in done.stdout


def test_comparisons_merge_into_the_comparison_of_every_row() -> None:
    rng = np.random.default_rng(5)
    live, candidate = rng.normal(size=900), rng.normal(size=900)
    whole = Comparison("regression")
    whole.add(live, candidate)
    parts = []
    for chunk in np.array_split(np.arange(900), 3):
        part = Comparison("regression")
        part.add(live[chunk], candidate[chunk])
        parts.append(part.arrays())
    merged, expected = Comparison.merged("regression", parts).figures(), whole.figures()
    assert merged["rows"] == expected["rows"] == 900
    assert merged["abs_diff"] == pytest.approx(expected["abs_diff"], rel=1e-12)
    labels = rng.integers(0, 3, size=(2, 900))
    agreed = Comparison("classification")
    agreed.add(list(labels[0]), list(labels[1]))
    halves = [Comparison("classification") for _ in range(2)]
    halves[0].add(list(labels[0][:400]), list(labels[1][:400]))
    halves[1].add(list(labels[0][400:]), list(labels[1][400:]))
    both = Comparison.merged("classification", [h.arrays() for h in halves])
    assert both.figures() == agreed.figures()


def test_a_shared_comparison_counts_this_servers_files_for_these_models(tmp_path: Path) -> None:
    """``serving.shadow.service_comparison`` merges the files of this server's workers for
    the same live model and candidate; another server's (a reused folder) or other models'
    are left out."""
    import os

    from serving.metrics import shadow_metrics
    from serving.shadow import SHADOW_PREFIX, Shadow, service_comparison

    shadow = Shadow(
        lambda rows: rows,
        "regression",
        shadow_metrics("regression"),
        tag="cand:1",
        live_tag="live:1",
        folder=tmp_path,
    )
    shadow.comparison.add([1.0, 2.0, 3.0], [1.5, 2.0, 2.0])
    shadow.scored, shadow.changed = 1, True
    shadow._share(force=True)
    mine = tmp_path / f"{SHADOW_PREFIX}{os.getpid()}.npz"
    with np.load(mine) as npz:
        arrays = {k: npz[k] for k in npz.files}
    np.savez(
        tmp_path / f"{SHADOW_PREFIX}1.npz", **arrays | {"server": np.array([os.getppid() + 1])}
    )
    np.savez(tmp_path / f"{SHADOW_PREFIX}2.npz", **arrays | {"models": np.array(["x:1", "y:1"])})
    np.savez(tmp_path / f"{SHADOW_PREFIX}3.npz", **arrays)  # a second worker of this server
    figures = service_comparison(tmp_path, "regression", "live:1", "cand:1")
    assert figures is not None
    assert (figures["workers"], figures["rows"], figures["calls_scored"]) == (2, 6, 2)
    assert figures["abs_diff"]["max"] == 1.0 and figures["abs_diff"]["sum"] == 3.0
    assert service_comparison(tmp_path, "regression", "live:1", "other:1") is None
