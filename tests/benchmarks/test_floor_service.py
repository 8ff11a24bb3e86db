"""The benchmark's framework floor behind a real ``bentoml serve``: the same record schema as
the service (so the same parsing and validation), a constant answer, no model."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from benchmarks.serving import FLOOR_TARGET
from tests.helpers.factories import bentoml_home
from tests.helpers.marks import starts_server
from tests.helpers.service_models import (
    PROJECT_ROOT,
    Models,
    bentoml_server,
    load_service,
    records,
    subprocess_env,
)

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
@starts_server
def floor_url(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("floor") / "bentoml-serve.log"
    env = subprocess_env(models, TAGSERVE_MODEL=models.regressor)
    with bentoml_server(FLOOR_TARGET, env=env, cwd=PROJECT_ROOT, log=log) as url:
        yield url


def test_the_floor_answers_a_valid_record_with_a_constant(models: Models, floor_url: str) -> None:
    for record in records(models.example(models.regressor))[:2]:
        answer = httpx.post(f"{floor_url}/predict", json=record, timeout=30)
        assert answer.status_code == 200
        assert answer.json() == {"prediction": 0.0}


@pytest.mark.parametrize(
    ("change", "field"),
    [({"carat": "heavy"}, "carat"), ({"colour": "E"}, "colour"), ({"cut": None}, "cut")],
)
def test_the_floor_refuses_what_the_service_refuses(
    models: Models, floor_url: str, change: dict, field: str
) -> None:
    record = {**records(models.example(models.regressor))[0], **change}
    with bentoml_home(models.bentoml_home):
        ours = load_service(models.regressor).Record
    with pytest.raises(ValueError, match=field):
        ours.model_validate(record)  # the service's own record type refuses it too
    answer = httpx.post(f"{floor_url}/predict", json=record, timeout=30)
    assert answer.status_code == 400
    assert field in answer.text


def test_the_floor_serves_the_services_record_schema(models: Models, floor_url: str) -> None:
    with bentoml_home(models.bentoml_home):
        ours = load_service(models.regressor).Record.model_json_schema()
    openapi = httpx.get(f"{floor_url}/docs.json", timeout=30).json()
    body = openapi["paths"]["/predict"]["post"]["requestBody"]
    floor = body["content"]["application/json"]["schema"]
    assert floor["properties"] == ours["properties"]
    assert floor["required"] == ours["required"]
