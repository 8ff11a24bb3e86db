"""Graceful drain behind a real ``bentoml serve``: SIGTERM under load cuts no request, the
service stops within TAGSERVE_DRAIN_SECONDS."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from inference.loading import load_pipeline
from tests.helpers.admission import HeldRequest
from tests.helpers.candidates import hey_errors, hey_ok, start_hey
from tests.helpers.servers import start_server
from tests.helpers.service_models import PROJECT_ROOT, Models, diamond_records, subprocess_env

pytestmark = pytest.mark.server

DRAIN_SECONDS = 10


def test_sigterm_under_load_cuts_no_request(models: Models, tmp_path: Path) -> None:
    """8 hey clients on /predict, a request held half-sent and a kept-alive connection; then
    SIGTERM: /readyz turns 503 on the open connection, the held request is answered, hey sees
    no connection cut (refused connections only: never accepted), and the service exits
    within TAGSERVE_DRAIN_SECONDS."""
    env = subprocess_env(
        models,
        TAGSERVE_MODEL=models.regressor,
        TAGSERVE_WORKERS="2",
        TAGSERVE_DRAIN_SECONDS=str(DRAIN_SECONDS),
        # The held request is finished after SIGTERM, on purpose: past the default deadline
        # on a loaded machine.
        TAGSERVE_REQUEST_READ_SECONDS=str(DRAIN_SECONDS),
    )
    log = tmp_path / "bentoml-serve.log"
    rows = diamond_records(2)
    expected = load_pipeline(models.mlflow_folder(models.regressor)).predict(pd.DataFrame(rows))
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
        # Asked once every worker drains: a /readyz in flight as its worker's drain began is
        # answered 200 with Connection: close (every answer of a draining worker closes its
        # connection), which would leave no open connection to ask on.
        assert drains_begun(log, workers=2, seconds=5), log.read_text()[-3000:]
        ready = probe.get("/readyz")
        assert ready.status_code == 503 and ready.headers["connection"] == "close"
        assert held.finish() == (200, {"prediction": float(expected[1])})
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


def drains_begun(log: Path, *, workers: int, seconds: float) -> bool:
    """Whether the server's log shows the drain begun in ``workers`` workers (one line each)
    within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if log.read_text(errors="replace").count("drain: SIGTERM;") >= workers:
            return True
        time.sleep(0.02)
    return False
