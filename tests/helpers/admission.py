"""Helpers for the load-shedding tests: fill a server's ``/predict`` budget deterministically
(a request whose body is held back stays admitted until it is finished), and read BentoML's
``/metrics`` request counts. No timing: every wait is for an observable state."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import select
import time
from collections.abc import Iterator
from typing import Any

import httpx


def shed_count(url: str, path: str = "/predict") -> int:
    """The requests on ``path`` the server refused (its ``/metrics``: load shedding counts
    them, as BentoML's request metrics never see them)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    pattern = (
        r'^tagserve_shed_requests_total\{[^}]*endpoint="' + re.escape(path) + r'"[^}]*\}'
        r"\s+([0-9.e+]+)$"
    )
    return int(sum(float(m) for m in re.findall(pattern, text, flags=re.MULTILINE)))


def bentoml_503_count(url: str, path: str = "/predict") -> int:
    """The 503 answers on ``path`` BentoML's own request metrics counted."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    pattern = (
        r'^bentoml_service_request_total\{[^}]*endpoint="' + re.escape(path) + r'"'
        r'[^}]*http_response_code="503"[^}]*\}\s+([0-9.e+]+)$'
    )
    return int(sum(float(m) for m in re.findall(pattern, text, flags=re.MULTILINE)))


class HeldRequest:
    """A POST whose last body byte is not sent yet: admitted, it holds a budget slot."""

    def __init__(self, url: str, path: str, record: dict[str, Any]) -> None:
        host, port = httpx.URL(url).host, httpx.URL(url).port
        self.body = json.dumps(record).encode()
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.conn.putrequest("POST", path)
        self.conn.putheader("Content-Type", "application/json")
        self.conn.putheader("Content-Length", str(len(self.body)))
        self.conn.endheaders()
        self.conn.send(self.body[:-1])

    def answered(self) -> bool:
        """Whether the server already answered (a held request it refused)."""
        readable, _, _ = select.select([self.conn.sock], [], [], 0)
        return bool(readable)

    def finish(self) -> tuple[int, Any]:
        """Send the last byte; the status and JSON body of the answer."""
        self.conn.send(self.body[-1:])
        response = self.conn.getresponse()
        return response.status, json.loads(response.read())

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def budget_filled(
    url: str, record: dict[str, Any], deadline_s: float = 60
) -> Iterator[HeldRequest]:
    """A server with ``/predict`` budget 1 (``TAGSERVE_PREDICT_QUEUE=0``) whose one slot is
    held: yields once a probe is refused, i.e. the held request is admitted."""
    give_up = time.monotonic() + deadline_s
    while True:
        held = HeldRequest(url, "/predict", record)
        try:
            while not held.answered():
                probe = httpx.post(f"{url}/predict", json=record, timeout=30)
                if probe.status_code == 503:
                    yield held
                    return
                assert time.monotonic() < give_up, "the held request was never admitted"
        finally:
            held.close()
        # The probe got in first and the held request was refused: hold another.
        assert time.monotonic() < give_up, "the held request was never admitted"
