"""The serving page's tables name everything the service reads and answers: every
``TAGSERVE_*`` setting the runtime code reads (found in its source, whatever its modules are
called), and every route of a service built for a real model (asked of the service itself:
its OpenAPI document, and the route that serves it)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from serving.routes import API_PAGE
from tests.helpers.docs import DOCS, section, table_first_cells
from tests.helpers.project import PROJECT_ROOT
from tests.helpers.service_models import Models, bentoml_home, load_service

# The code a bento ships: what it reads from the environment is what the page documents.
RUNTIME = ["service.py", "serving", "inference"]
SETTING = re.compile(r"TAGSERVE_[A-Z][A-Z_]*[A-Z]")
ROUTE = re.compile(r"(/[\w./{}]*)")  # a template's parameters in braces: /v2/models/{name}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
SERVING_PAGE = (DOCS / "serving.md").read_text()


def runtime_settings() -> set[str]:
    files = []
    for name in RUNTIME:
        path = PROJECT_ROOT / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return {m for f in files for m in SETTING.findall(f.read_text())}


def documented_settings() -> set[str]:
    cells = table_first_cells(section(SERVING_PAGE, "Settings"))
    return {m for cell in cells for m in SETTING.findall(cell)}


def test_every_setting_the_service_reads_is_in_the_settings_table():
    read = runtime_settings()
    assert {"TAGSERVE_MODEL", "TAGSERVE_MAX_ROWS", "TAGSERVE_MONITOR"} <= read  # the grep works
    missing = read - documented_settings()
    assert not missing, f"docs/serving.md's Settings table lacks {sorted(missing)}"


def documented_routes() -> set[tuple[str, str]]:
    """(method, path) of each row of the Routes table: ``GET, POST /metadata``."""
    routes = set()
    for cell in table_first_cells(section(SERVING_PAGE, "Routes")):
        text = cell.strip("`")
        methods = [m for m in METHODS if re.search(rf"\b{m}\b", text)]
        paths = ROUTE.findall(text.split(" ", len(methods))[-1])
        assert methods and len(paths) == 1, f"a Routes row names one path and its methods: {cell}"
        routes |= {(m, paths[0]) for m in methods}
    return routes


@pytest.fixture(scope="module")
def answered(models: Models) -> set[tuple[str, str]]:
    """(method, path) of every route a service of the session's regressor answers: the
    operations of the OpenAPI document it serves at ``/docs.json`` (built with the service,
    read without starting it: an app started in-process registers BentoML's metrics for the
    whole test session), the document's own route and the page that shows it."""
    with bentoml_home(models.bentoml_home):
        service = load_service(models.regressor).Tagserve
    operations: dict[str, Any] = json.loads(service.inner.plan.openapi_body)["paths"]
    routes = {(m.upper(), p) for p, ops in operations.items() for m in ops}
    assert ("POST", "/predict") in routes and ("GET", "/readyz") in routes
    return routes | {("GET", "/docs.json"), ("GET", "/"), ("GET", API_PAGE)}


def test_every_route_the_service_answers_is_in_the_routes_table(answered):
    missing = answered - documented_routes()
    assert not missing, f"docs/serving.md's Routes table lacks {sorted(missing)}"


def test_the_routes_table_names_no_route_the_service_lacks(answered):
    extra = documented_routes() - answered
    assert not extra, f"docs/serving.md's Routes table names routes not served: {sorted(extra)}"
