"""Fixtures of the benchmark tests: a tiny real HTTP server for hey, the session's models."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import marks

SHED = b"shed"  # a body holding this is answered 503, any other 200 (test_hey.py)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as hey uses it

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        status = 503 if SHED in body else 200
        answer = b'{"ok": true}'
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass  # quiet


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    """A threaded HTTP server on 127.0.0.1 answering POSTs 200, or 503 to bodies with SHED."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hey_installed() -> None:
    """The load generator hey is on PATH (a failure under CI, a skip elsewhere)."""
    marks.tool("hey", "the load generator: apt-get install -y hey")


@pytest.fixture
@marks.starts_server
def hey(hey_installed: None) -> None:
    """The test runs hey (``benchmarks.hey.run_hey``): a server test."""
