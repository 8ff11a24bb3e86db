"""A candidate beside the live model behind a real ``bentoml serve``: shadow 1.0 answers from
the live model alone and its metrics equal the differences of the two models' predictions
(and ``python -m clients compare`` of the same rows); a 10 % canary by request key; the
candidate's batch APIs hidden; /metadata names the candidate. (In-process: test_shadow.py,
test_candidate_check.py.)"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from inference.compare import ABS_DIFF_BUCKETS
from serving.routing import canary_share
from tests.helpers.candidates import metric
from tests.helpers.marks import starts_server
from tests.helpers.service_models import (
    PROJECT_ROOT,
    PYTHON,
    Models,
    bentoml_server,
    subprocess_env,
)

CANARY_PERCENT = 10.0
CANARY_REQUESTS = 2_000

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
@starts_server
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
    candidate_rows: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    shadow_idle(paired)
    before = histogram(paired)
    requests_before = metric(paired, "tagserve_shadow_requests_total")
    dropped_before = metric(paired, "tagserve_shadow_dropped_total")
    calls = [("/predict", row) for row in candidate_rows[:20]]
    calls += [("/predict_batch", candidate_rows[i : i + 4]) for i in range(20, 32, 4)]
    calls += [("/invocations", {"dataframe_records": candidate_rows[32:40]})]
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
    assert sent_rows == candidate_rows

    # The offline comparison of the same rows: `python -m clients compare`.
    table = tmp_path / "rows.parquet"
    pd.DataFrame(candidate_rows).to_parquet(table)
    cmd = [PYTHON, "-m", "clients", "compare", str(table), "--model", models.regressor]
    cmd += ["--candidate", candidate, "--json"]
    done = subprocess.run(
        cmd, cwd=PROJECT_ROOT, env=subprocess_env(models), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    # The expected figures by hand: scikit-learn's candidate against the live answers.
    from inference.loading import load_pipeline

    theirs = load_pipeline(models.mlflow_folder(candidate)).predict(pd.DataFrame(candidate_rows))
    diffs = np.abs(theirs - np.array(live_answers))
    requests = settled(paired, "tagserve_shadow_requests_total", requests_before + len(calls))
    assert requests - requests_before == len(calls)
    assert metric(paired, "tagserve_shadow_dropped_total") == dropped_before
    after = histogram(paired)
    assert after["count"] - before["count"] == len(candidate_rows) == figures["rows"]
    assert after["sum"] - before["sum"] == pytest.approx(diffs.sum(), rel=1e-12)
    for le in ABS_DIFF_BUCKETS:
        assert after[str(le)] - before[str(le)] == int((diffs <= le).sum()), le
    # The CLI saw the same rows.
    assert figures["abs_diff"]["sum"] == pytest.approx(diffs.sum(), rel=1e-12)
    assert figures["abs_diff"]["max"] == diffs.max() > 0  # a candidate that really differs
    assert figures["abs_diff"]["p50"] == pytest.approx(np.median(diffs), rel=1e-12)
    # Each model's latency, by tag.
    assert metric(paired, "tagserve_model_latency_seconds_count", f'model="{candidate}"') > 0
    assert metric(paired, "tagserve_model_latency_seconds_count", f'model="{models.regressor}"') > 0


def test_canary_answers_about_its_share_and_a_request_key_always_gets_the_same_model(
    paired: str, models: Models, candidate: str, candidate_rows: list[dict[str, Any]], both: dict
) -> None:
    answered: Counter = Counter()
    with httpx.Client(base_url=paired, timeout=60) as client:
        for i in range(CANARY_REQUESTS):
            j = i % len(candidate_rows)
            got = client.post("/predict", json=candidate_rows[j])
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
                ("/predict", candidate_rows[0], {"prediction": values[0]}),
                ("/predict_batch", candidate_rows[:2], [{"prediction": v} for v in values[:2]]),
                (
                    "/invocations",
                    {"dataframe_records": candidate_rows[:2]},
                    {"predictions": values[:2]},
                ),
                ("/predict", candidate_rows[1], {"prediction": values[1]}),
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


# --- a slow candidate ---------------------------------------------------------------------------


# --- graceful drain -----------------------------------------------------------------------------
