"""The download step over real HTTP, from a server on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import subprocess
import threading

import pandas as pd
import pytest

from artifacts.store import LocalArtifactStore, file_sha256
from pipeline.errors import PipelineError
from pipeline.run import run
from pipeline.tracking import store_root
from tests.helpers.project import PROJECT_ROOT, PYTHON


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files without an access log (the requests' query strings are test secrets,
    and W&B captures the process's output)."""

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path):
    """Serve ``tmp_path/www`` over HTTP on 127.0.0.1; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
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


SECRETS = ("s3cr3t-pw", "tok-123456", "sig-abcdef", "key-987")


def test_credentials_in_data_url_are_redacted_everywhere(http_root, make_cfg, tmp_path, capsys):
    """user:password@ and secret query values never reach the artifact metadata, the printed
    line, the W&B run (its config included) or anything else under the pipeline's home."""
    root, base = http_root
    pd.read_csv("data/penguins.csv").to_csv(root / "penguins.csv", index=False)
    host = base.removeprefix("http://")
    url = (
        f"http://reader:{SECRETS[0]}@{host}/penguins.csv?access_token={SECRETS[1]}"
        f"&sig={SECRETS[2]}&X-Api-Key={SECRETS[3]}&page=2"
    )
    home = tmp_path / "home"
    cfg = make_cfg(
        "experiment=penguins", f"data.url='{url}'", "main.steps=download", tracking="offline"
    )
    run(cfg)
    raw = LocalArtifactStore(store_root(cfg)).get("raw_data:latest")
    redacted = f"http://***@{host}/penguins.csv?access_token=***&sig=***&X-Api-Key=***&page=2"
    assert raw.metadata["url"] == redacted
    assert raw.metadata["rows"] == 344  # the download itself used the credentials
    out = capsys.readouterr().out
    assert redacted in out and not any(secret in out for secret in SECRETS)
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files)  # the offline W&B run was written
    leaks = [str(p) for p in files for s in SECRETS if s.encode() in p.read_bytes()]
    assert leaks == []


def test_a_failed_download_does_not_print_the_credentials(http_root, make_cfg):
    _, base = http_root
    url = f"{base.replace('http://', 'http://u:' + SECRETS[0] + '@')}/none.csv?token={SECRETS[1]}"
    cfg = make_cfg(f"data.url='{url}'", "main.steps=download")
    with pytest.raises(PipelineError, match=r"HTTP 404") as failed:
        run(cfg)
    assert not any(secret in str(failed.value) for secret in SECRETS)


@pytest.mark.parametrize("mode", [[], ["--multirun"]])
def test_the_cli_keeps_credentials_out_of_hydra_run_files(
    http_root, subprocess_env, tmp_path, mode
):
    """`python -m pipeline data.url=...`: Hydra saves the config and the overrides of every run
    (`<home>/hydra/<run>/.hydra/`); they hold the URL without its credentials."""
    root, base = http_root
    pd.read_csv("data/penguins.csv").to_csv(root / "penguins.csv", index=False)
    host = base.removeprefix("http://")
    url = f"http://reader:{SECRETS[0]}@{host}/penguins.csv?token={SECRETS[1]}"
    done = subprocess.run(
        [PYTHON, "-m", "pipeline", *mode, "experiment=penguins", f"data.url='{url}'"]
        + ["main.steps=download", "tracking=disabled"],
        cwd=PROJECT_ROOT,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    home = tmp_path / "home"
    saved = list(home.glob("hydra/**/.hydra/*.yaml"))
    assert {p.name for p in saved} >= {"config.yaml", "overrides.yaml"}
    assert (
        f"http://***@{host}/penguins.csv?token=***" in (saved[0].parent / "config.yaml").read_text()
    )
    files = [p for p in home.rglob("*") if p.is_file()]
    leaks = [str(p) for p in files for s in SECRETS if s.encode() in p.read_bytes()]
    assert leaks == []
    assert not any(secret in done.stdout + done.stderr for secret in SECRETS)
