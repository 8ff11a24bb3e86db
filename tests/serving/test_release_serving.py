"""Released bentos served by a real ``bentoml serve`` (and `make serve`): a released bento
serves its own model after a newer one is imported, `make serve` the prod model after a
rollback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.helpers.service_models import (
    PROJECT_ROOT,
    REGRESSOR_NAME,
    Models,
    bentoml_home,
    bentoml_server,
    free_port,
    import_prod,
    records,
    subprocess_env,
    train_and_log,
)

pytestmark = [pytest.mark.server, pytest.mark.usefixtures("git_identity")]


@pytest.fixture(scope="module")
def newer_model(home: Models) -> Iterator[str]:
    """A newer prod model imported after the release: `latest` moves to it."""
    train_and_log(home.tagserve_home, "tagserve-release-newer", classifier=False, seed=7)
    with bentoml_home(home.bentoml_home):
        tag = import_prod("tagserve-release-newer", home=home.tagserve_home, name=REGRESSOR_NAME)
    assert tag != home.regressor
    yield tag


def test_released_bento_serves_its_own_model_from_the_store(
    home: Models, released: dict[str, Any], newer_model: str, tmp_path: Path
) -> None:
    env = subprocess_env(home)  # no TAGSERVE_MODEL: the bento decides
    with bentoml_server(
        "tagserve:v1.2.3", env=env, cwd=tmp_path, log=tmp_path / "serve.log"
    ) as url:
        meta = httpx.get(f"{url}/metadata").json()
        example = home.example(home.regressor)
        predict = httpx.post(f"{url}/predict", json=records(example)[0])
        invocations = httpx.post(f"{url}/invocations", json=example)
    assert meta["model"] == home.regressor != newer_model
    assert meta["bento"] == "tagserve:v1.2.3"
    assert meta["git_tag"] == "v1.2.3" and meta["git_commit"] == released["commit"]
    from inference.loading import load_pipeline

    split = example["dataframe_split"]
    frame = pd.DataFrame(split["data"], columns=split["columns"])
    expected = load_pipeline(home.mlflow_folder(home.regressor)).predict(frame)
    assert predict.json() == {"prediction": expected[0]}
    assert invocations.json() == {"predictions": expected.tolist()}


def test_make_serve_serves_the_prod_model_after_a_rollback(
    rolled_back: dict[str, Any], tmp_path: Path
) -> None:
    """`make serve` (the real target, a real server on 127.0.0.1): the rolled-back prod model,
    not the newest import."""
    from tests.helpers.servers import start_process

    home, prod = rolled_back["models"], rolled_back["prod"]
    port = free_port()
    server = start_process(
        ["make", "--no-print-directory", "serve", "HOST=127.0.0.1", f"PORT={port}"],
        url=f"http://127.0.0.1:{port}",
        ready_path="/readyz",
        env=subprocess_env(home),
        cwd=PROJECT_ROOT,
        log=tmp_path / "serve.log",
    )
    try:
        meta = httpx.get(f"{server.url}/metadata").json()
    finally:
        server.stop()
    assert meta["model"] == prod != rolled_back["newer"]
    assert f"serving {prod}" in (tmp_path / "serve.log").read_text()
