"""The download step over real HTTP, from a server on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import threading

import pandas as pd
import pytest

from artifacts.store import LocalArtifactStore, file_sha256
from pipeline.errors import PipelineError
from pipeline.run import run
from pipeline.tracking import store_root


@pytest.fixture
def http_root(tmp_path):
    """Serve ``tmp_path/www`` over HTTP on 127.0.0.1; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_over_http_logs_raw_data(http_root, make_cfg):
    root, base = http_root
    pd.read_csv("data/penguins.csv").to_csv(root / "penguins.csv", index=False)
    cfg = make_cfg("experiment=penguins", f"data.url={base}/penguins.csv", "main.steps=download")
    run(cfg)
    raw = LocalArtifactStore(store_root(cfg)).get("raw_data:latest")
    assert raw.metadata["url"] == f"{base}/penguins.csv"
    assert raw.metadata["rows"] == 344 and raw.metadata["format"] == "csv"
    assert raw.metadata["sha256"] == file_sha256(root / "penguins.csv")


def test_http_404_is_a_clear_error_and_logs_nothing(http_root, make_cfg):
    _, base = http_root
    cfg = make_cfg(f"data.url={base}/nothing.csv", "main.steps=download")
    with pytest.raises(PipelineError, match=r"cannot download .*/nothing.csv: HTTP 404"):
        run(cfg)
    assert not LocalArtifactStore(store_root(cfg)).exists("raw_data:latest")
