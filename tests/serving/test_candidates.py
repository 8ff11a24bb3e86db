"""A candidate beside the live model behind a real ``bentoml serve``: shadow 1.0
answers from the live model alone and its metrics equal an offline comparison of the same
requests; a 10 % canary by request key; refusals at start-up in one line; a slow candidate
never delays the live answer; SIGTERM under load cuts no request."""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from inference.compare import ABS_DIFF_BUCKETS, Comparison
from serving.candidates import CandidateRefused, check_candidate
from serving.metrics import shadow_metrics
from serving.model_choice import ModelChoice
from serving.routing import CANDIDATE, SHADOWED, canary_share, choose
from serving.settings import Settings
from serving.shadow import Shadow
from tests.helpers.admission import HeldRequest
from tests.helpers.candidates import (
    hey_errors,
    hey_ok,
    hostile_copy,
    metric,
    start_hey,
)
from tests.helpers.servers import BENTOML_CLI, free_port, start_server
from tests.helpers.service_models import (
    PROJECT_ROOT,
    PYTHON,
    Models,
    bentoml_home,
    bentoml_server,
    diamonds_sample,
    subprocess_env,
)

CANARY_PERCENT = 10.0
CANARY_REQUESTS = 2_000
DRAIN_SECONDS = 10


def diamond_records(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """Diamonds as JSON records of the regressor's features (plain Python values)."""
    frame = diamonds_sample(600).drop(columns=["price"]).sample(n, random_state=seed)
    return json.loads(frame.to_json(orient="records"))


def loaded(models: Models, tag: str) -> Any:
    """The model ``tag`` as the service loads it (its contract, checked fast path)."""
    import bentoml

    from inference.bento import fastpath_folder, mlflow_folder
    from inference.model import load_model
    from serving.loading import model_contract

    with bentoml_home(models.bentoml_home):
        model = bentoml.models.get(tag)
        return load_model(mlflow_folder(model), model_contract(model), fastpath_folder(model))


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return diamond_records(40)


@pytest.fixture(scope="module")
def both(models: Models, candidate: str, rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """The live model's and the candidate's predictions of ``rows``, in-process."""
    return {
        "live": [a["prediction"] for a in loaded(models, models.regressor).predict_records(rows)],
        "candidate": [a["prediction"] for a in loaded(models, candidate).predict_records(rows)],
    }


@pytest.fixture(scope="module")
def paired(
    models: Models, candidate: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``bentoml serve`` of the session's regressor with the candidate beside it: shadow 1.0,
    canary 10 % (a request whose key falls outside the canary is answered live and shadowed)."""
    log = tmp_path_factory.mktemp("paired") / "bentoml-serve.log"
    env = subprocess_env(
        models,
        TAGSERVE_MODEL=models.regressor,
        TAGSERVE_CANDIDATE=candidate,
        TAGSERVE_SHADOW_FRACTION="1",
        TAGSERVE_CANARY_PERCENT=str(CANARY_PERCENT),
    )
    with bentoml_server("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=log) as url:
        yield url


def live_keys(n: int) -> list[str]:
    """Request keys the canary gives to the live model."""
    keys = (f"client-{i}" for i in range(10 * n))
    return [k for k in keys if canary_share(k.encode()) >= CANARY_PERCENT][:n]


def settled(url: str, name: str, want: float, timeout: float = 60) -> float:
    """The metric ``name`` once it reaches ``want`` (the shadow works in the background)."""
    deadline = time.monotonic() + timeout
    while (got := metric(url, name)) < want and time.monotonic() < deadline:
        time.sleep(0.1)
    return got


def shadow_idle(url: str) -> None:
    """Until the shadow's counters stop moving (what earlier tests queued is scored)."""
    seen = None
    while (
        now := (
            metric(url, "tagserve_shadow_requests_total"),
            metric(url, "tagserve_shadow_dropped_total"),
        )
    ) != seen:  # noqa: E501
        seen = now
        time.sleep(0.5)


def histogram(url: str) -> dict[str, float]:
    """The tagserve_shadow_abs_diff histogram: each bucket's count, count and sum."""
    from prometheus_client.utils import floatToGoString

    out = {
        str(le): metric(url, "tagserve_shadow_abs_diff_bucket", f'le="{floatToGoString(le)}"')
        for le in ABS_DIFF_BUCKETS
    }
    out["count"] = metric(url, "tagserve_shadow_abs_diff_count")
    out["sum"] = metric(url, "tagserve_shadow_abs_diff_sum")
    return out


def test_shadow_answers_from_the_live_model_and_its_metrics_equal_an_offline_comparison(
    paired: str,
    server: str,
    models: Models,
    candidate: str,
    rows: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    shadow_idle(paired)
    before = histogram(paired)
    requests_before = metric(paired, "tagserve_shadow_requests_total")
    dropped_before = metric(paired, "tagserve_shadow_dropped_total")
    calls = [("/predict", row) for row in rows[:20]]
    calls += [("/predict_batch", rows[i : i + 4]) for i in range(20, 32, 4)]
    calls += [("/invocations", {"dataframe_records": rows[32:40]})]
    live_answers: list[float] = []
    sent_rows: list[dict[str, Any]] = []
    keys = live_keys(len(calls))
    with httpx.Client(timeout=60) as client:
        for (path, body), key in zip(calls, keys, strict=True):
            got = client.post(f"{paired}{path}", json=body, headers={"X-Request-Key": key})
            alone = client.post(f"{server}{path}", json=body)
            assert got.status_code == alone.status_code == 200, got.text
            assert got.headers["x-tagserve-model"] == models.regressor
            assert got.content == alone.content  # bit for bit what the live model alone says
            answer = got.json()
            values = (
                answer["predictions"]
                if path == "/invocations"
                else [a["prediction"] for a in (answer if isinstance(answer, list) else [answer])]
            )
            live_answers += values
            sent_rows += (
                body["dataframe_records"]
                if path == "/invocations"
                else (body if isinstance(body, list) else [body])
            )
    assert sent_rows == rows

    # The offline comparison of the same rows: `python -m clients compare`.
    table = tmp_path / "rows.parquet"
    pd.DataFrame(rows).to_parquet(table)
    cmd = [PYTHON, "-m", "clients", "compare", str(table), "--model", models.regressor]
    cmd += ["--candidate", candidate, "--json"]
    done = subprocess.run(
        cmd, cwd=PROJECT_ROOT, env=subprocess_env(models), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    offline = Comparison("regression")
    diffs = offline.add(
        live_answers, [a["prediction"] for a in loaded(models, candidate).predict_records(rows)]
    )
    requests = settled(paired, "tagserve_shadow_requests_total", requests_before + len(calls))
    assert requests - requests_before == len(calls)
    assert metric(paired, "tagserve_shadow_dropped_total") == dropped_before
    after = histogram(paired)
    assert after["count"] - before["count"] == len(rows) == offline.rows == figures["rows"]
    assert after["sum"] - before["sum"] == pytest.approx(figures["abs_diff"]["sum"], rel=1e-12)
    assert figures["abs_diff"] == offline.figures()["abs_diff"]  # the CLI saw the same
    for le in ABS_DIFF_BUCKETS:
        assert after[str(le)] - before[str(le)] == int((diffs <= le).sum()), le
    assert offline.figures()["abs_diff"]["max"] > 0  # a candidate that really differs
    # Each model's latency, by tag.
    assert metric(paired, "tagserve_model_latency_seconds_count", f'model="{candidate}"') > 0
    assert metric(paired, "tagserve_model_latency_seconds_count", f'model="{models.regressor}"') > 0


def test_canary_answers_about_its_share_and_a_request_key_always_gets_the_same_model(
    paired: str, models: Models, candidate: str, rows: list[dict[str, Any]], both: dict
) -> None:
    answered: Counter = Counter()
    with httpx.Client(base_url=paired, timeout=60) as client:
        for i in range(CANARY_REQUESTS):
            j = i % len(rows)
            got = client.post("/predict", json=rows[j])
            assert got.status_code == 200, got.text
            tag = got.headers["x-tagserve-model"]
            answered[tag] += 1
            want = both["candidate" if tag == candidate else "live"][j]
            assert got.json() == {"prediction": want}  # the model named answered
        share = answered[candidate] / CANARY_REQUESTS * 100
        # Binomial(2000, 0.1): sd 1.3 %; 7-13 % is 4.5 sd either way.
        assert 7 <= share <= 13, answered
        assert set(answered) == {candidate, models.regressor}
        seen = set()
        for k in range(40):
            key = f"user-{k}"
            want = candidate if canary_share(key.encode()) < CANARY_PERCENT else models.regressor
            values = both["candidate" if want == candidate else "live"]
            seen.add(want)
            for path, body, expected in (
                ("/predict", rows[0], {"prediction": values[0]}),
                ("/predict_batch", rows[:2], [{"prediction": v} for v in values[:2]]),
                ("/invocations", {"dataframe_records": rows[:2]}, {"predictions": values[:2]}),
                ("/predict", rows[1], {"prediction": values[1]}),
            ):
                got = client.post(path, json=body, headers={"X-Request-Key": key})
                assert got.status_code == 200 and got.headers["x-tagserve-model"] == want
                assert got.json() == expected, (path, want)  # the model named answered
        assert seen == {candidate, models.regressor}


def test_the_hidden_batch_apis_are_not_reachable_nor_documented(paired: str) -> None:
    assert httpx.post(f"{paired}/_tagserve/predict_batch_candidate", json=[]).status_code == 404
    document = httpx.get(f"{paired}/docs.json").json()
    assert not [p for p in document["paths"] if "_tagserve" in p]


def test_metadata_names_the_candidate_or_null(paired: str, server: str, candidate: str) -> None:
    meta = httpx.get(f"{paired}/metadata").json()["candidate"]
    assert meta["model"] == candidate and meta["artifact"] == "model_export:v0"
    assert meta["canary_percent"] == CANARY_PERCENT and meta["shadow_fraction"] == 1.0
    assert meta["engine"] and meta["fast_path"]["import"]
    assert httpx.get(f"{server}/metadata").json()["candidate"] is None


# --- refusals at start-up -----------------------------------------------------------------------


def test_a_hostile_candidate_is_refused_at_start_up_in_one_line(
    home: Models, tmp_path: Path
) -> None:
    evil = hostile_copy(home.bentoml_home, home.regressor, "v9-evil")
    env = subprocess_env(home, TAGSERVE_MODEL=home.regressor, TAGSERVE_CANDIDATE=evil)
    cmd = [BENTOML_CLI, "serve", "service:Tagserve", "--host", "127.0.0.1"]
    cmd += ["--port", str(free_port())]
    done = subprocess.run(
        cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    refusal = [line for line in lines if "TAGSERVE_CANDIDATE" in line]
    assert len(refusal) == 1, lines
    assert "ships code of its own" in refusal[0] and evil in refusal[0]
    assert not [line for line in lines if "Traceback" in line], lines


def test_an_inexact_or_mismatched_candidate_is_refused(models: Models, candidate: str) -> None:
    import bentoml

    from serving.loading import model_contract

    with bentoml_home(models.bentoml_home):
        live = model_contract(bentoml.models.get(models.regressor))
        classifier = bentoml.models.get(models.classifier)
        cases = {
            "tagserve-diamonds:latest": "exact tag",
            "tagserve-diamonds": "exact tag",
            "tagserve-diamonds:v7-000000000000": "no model",
            models.regressor: "the live model itself",
            str(classifier.tag): "is a classification model",
        }
        for tag, problem in cases.items():
            with pytest.raises(CandidateRefused, match=problem):
                check_candidate(tag, models.regressor, live, model_contract)
        # Another input contract: a column of another type.
        changed = model_contract(bentoml.models.get(models.regressor))
        changed.columns[0] = dataclasses.replace(changed.columns[0], type="long")
        with pytest.raises(CandidateRefused, match=rf"{changed.columns[0].name} \(long\) missing"):
            check_candidate(candidate, models.regressor, changed, model_contract)
        assert (
            str(check_candidate(candidate, models.regressor, live, model_contract).tag) == candidate
        )


def test_settings_of_the_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGSERVE_CANDIDATE", "m:v1")
    monkeypatch.setenv("TAGSERVE_SHADOW_FRACTION", "0.25")
    monkeypatch.setenv("TAGSERVE_CANARY_PERCENT", "5")
    monkeypatch.setenv("TAGSERVE_DRAIN_SECONDS", "7")
    s = Settings.from_env()
    assert (s.candidate, s.shadow_fraction, s.canary_percent, s.drain_seconds) == (
        "m:v1",
        0.25,
        5,
        7,
    )
    assert Settings.from_env({"candidate": "m:v2"}).candidate == "m:v2"  # the bento's wins
    for name, value in (("TAGSERVE_SHADOW_FRACTION", "1.5"), ("TAGSERVE_CANARY_PERCENT", "nan")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match=f"{name} must be from 0 to"):
            Settings.from_env()
        monkeypatch.delenv(name)


def test_choice_of_the_route() -> None:
    rng = random.Random(0)
    assert {choose(0, 0, None, rng) for _ in range(100)} == {"live"}
    assert {choose(0, 1, None, rng) for _ in range(100)} == {SHADOWED}
    assert {choose(100, 1, None, rng) for _ in range(100)} == {CANDIDATE}
    key = b"a-client"
    assert len({choose(50, 0, key, random.Random(i)) for i in range(50)}) == 1  # stable
    shares = [canary_share(f"k{i}".encode()) for i in range(10_000)]
    assert min(shares) >= 0 and max(shares) < 100
    assert 9 < sum(s < 10 for s in shares) / 100 < 11


# --- a slow candidate ---------------------------------------------------------------------------


class BlockedCandidate:
    """A test double of the candidate's scorer: blocks until released (a slow candidate)."""

    def __init__(self, live: Any) -> None:
        self.live = live
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict_records(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.entered.set()
        assert self.release.wait(60)
        return self.live.predict_records(rows)


def test_a_slow_candidate_never_delays_the_live_answer_and_drops_are_counted(
    models: Models, rows: list[dict[str, Any]], both: dict
) -> None:
    live = loaded(models, models.regressor)
    slow = BlockedCandidate(live)
    choice = ModelChoice(live, models.regressor, slow, "slow:v1", shadow_fraction=1.0)
    # A small queue, so that the drops are seen with a few calls.
    choice.shadow = shadow = Shadow(
        choice.candidate_predictions,
        "regression",
        shadow_metrics("regression"),
        tag="slow:v1",
        maxsize=4,
    )
    dropped_metric = shadow_metrics("regression").dropped.labels(reason="queue_full")
    dropped_before = dropped_metric._value.get()
    answers: list[Any] = []

    def serve() -> None:
        answers.append(choice.predict_records(rows[:1], SHADOWED))
        assert slow.entered.wait(60)  # the candidate is now stuck on the first call
        for row in rows[1:11]:
            answers.append(choice.predict_records([row], SHADOWED))

    worker = threading.Thread(target=serve)
    worker.start()
    worker.join(30)  # the live path never waits for the candidate: it returns while blocked
    stuck = worker.is_alive()
    slow.release.set()
    assert not stuck, "a live answer waited for the slow candidate"
    assert [a[0]["prediction"] for a in answers] == both["live"][:11]
    # 1 being scored, 4 queued, 6 dropped and counted.
    assert (shadow.offered, shadow.dropped) == (11, 6)
    assert dropped_metric._value.get() - dropped_before == 6
    assert shadow.wait()
    assert shadow.scored == 5


def test_a_classifier_candidate_is_compared_by_agreement(
    models: Models, classifier_candidate: str
) -> None:
    """The shadow of a classifier: agreement counted per row as the offline comparison counts
    it, the live answers (with probabilities) unchanged."""
    from tests.helpers.service_models import penguins

    features = [c.name for c in loaded(models, models.classifier).contract.columns]
    rows = json.loads(penguins()[features].head(60).to_json(orient="records"))
    live, candidate = loaded(models, models.classifier), loaded(models, classifier_candidate)
    metrics = shadow_metrics("classification")
    choice = ModelChoice(live, models.classifier, candidate, classifier_candidate)
    choice.shadow = shadow = Shadow(
        choice.candidate_predictions,
        "classification",
        metrics,
        tag=classifier_candidate,
        gather_s=0,
    )
    agreed_before, rows_before = metrics.agreed._value.get(), metrics.rows._value.get()
    answers = [choice.predict_records([row], SHADOWED)[0] for row in rows]
    assert answers == live.predict_records(rows)  # probabilities included
    assert shadow.wait()
    offline = Comparison("classification")
    offline.add(
        [a["prediction"] for a in answers],
        [a["prediction"] for a in candidate.predict_records(rows)],
    )
    assert shadow.comparison.figures() == offline.figures()
    assert metrics.rows._value.get() - rows_before == len(rows)
    assert metrics.agreed._value.get() - agreed_before == offline.agreed
    assert 0 < offline.agreed <= len(rows)
    assert metrics.agreement._value.get() == offline.agreed / len(rows)


# --- graceful drain -----------------------------------------------------------------------------


def test_sigterm_under_load_cuts_no_request(
    models: Models, rows: list[dict[str, Any]], both: dict, tmp_path: Path
) -> None:
    """8 hey clients on /predict, a request held half-sent and a kept-alive connection; then
    SIGTERM: /readyz turns 503 on the open connection, the held request is answered, hey sees
    no connection cut (refused connections only: never accepted), and the service exits
    within TAGSERVE_DRAIN_SECONDS."""
    env = subprocess_env(
        models,
        TAGSERVE_MODEL=models.regressor,
        TAGSERVE_WORKERS="2",
        TAGSERVE_DRAIN_SECONDS=str(DRAIN_SECONDS),
    )
    log = tmp_path / "bentoml-serve.log"
    server = start_server("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=log)
    try:
        body = tmp_path / "record.json"
        body.write_text(json.dumps(rows[0]))
        hey = start_hey(f"{server.url}/predict", body, seconds=8, clients=8)
        port = int(server.url.rsplit(":", 1)[1])
        probe = httpx.Client(
            base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=1)
        )
        assert probe.get("/readyz").status_code == 200  # its connection stays open
        held = HeldRequest(server.url, "/predict", rows[1])
        time.sleep(2)  # hey is at full speed
        # Used again just before SIGTERM: an idle kept-alive connection is closed by uvicorn
        # after 5 s (its keep-alive timeout), which a loaded machine can reach here.
        assert probe.get("/readyz").status_code == 200
        stopped_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while (ready := probe.get("/readyz")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.status_code == 503 and ready.headers["connection"] == "close"
        assert held.finish() == (200, {"prediction": both["live"][1]})
        server.process.wait(DRAIN_SECONDS + 10)
        took = time.monotonic() - stopped_at
        out, _ = hey.communicate(timeout=60)
        errors = hey_errors(out)
        assert errors["reset"] == errors["eof"] == errors["other"] == 0, out[-3000:]
        assert hey_ok(out) > 0
        assert server.process.returncode == 0
        assert took <= DRAIN_SECONDS + 2, took
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
    finally:
        server.stop()


def test_compare_refuses_in_one_line(models: Models, candidate: str, tmp_path: Path) -> None:
    table = tmp_path / "rows.csv"
    pd.DataFrame(diamond_records(5)).to_csv(table, index=False)
    for args, problem in (
        (
            [str(tmp_path / "none.csv"), "--model", models.regressor, "--candidate", candidate],
            "does not exist",
        ),
        (
            [str(table), "--model", models.regressor, "--candidate", models.classifier],
            "is a classification model",
        ),
        ([str(table), "--model", models.regressor, "--candidate", "nope:v1"], "no model"),
    ):
        done = subprocess.run(
            [PYTHON, "-m", "clients", "compare", *args],
            cwd=PROJECT_ROOT, env=subprocess_env(models), capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 1 and done.stdout == "", done.stdout
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
        assert problem in done.stderr, done.stderr
