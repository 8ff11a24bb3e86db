"""Helpers for the candidate tests: a candidate regressor trained with other
settings and imported non-prod beside the session's models; a hostile copy of a model in a
BentoML store; a model loaded as the service loads it; shadow metrics read from
``/metrics``; ``hey`` runs classified by their errors."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml

from inference.bento import stage_of
from tests.helpers import marks
from tests.helpers.factories import bentoml_home
from tests.helpers.hostile_models import with_code_folder
from tests.helpers.service_models import (
    CLASSIFIER_NAME,
    REGRESSOR_NAME,
    Models,
    train_and_log,
)

CANDIDATE_PROJECT = "tagserve-diamonds-candidate"
CLASSIFIER_CANDIDATE_PROJECT = "tagserve-penguins-candidate"
CANDIDATE_SEED = 7


def import_candidate(models: Models, *, train: bool = True, classifier: bool = False) -> str:
    """A regressor of the live model's input contract trained with another seed (another
    project of the artifact store), imported into ``models``' BentoML home under the live
    model's name but not as prod (its project's v0; its prod is a later v1). Its tag.
    ``train=False``: imported again (into another BentoML home) from the same artifact.
    ``classifier``: a penguins classifier beside the session's classifier instead."""
    from importers import import_model

    home = models.tagserve_home
    project = CLASSIFIER_CANDIDATE_PROJECT if classifier else CANDIDATE_PROJECT
    if train:
        for seed in (CANDIDATE_SEED, CANDIDATE_SEED + 1):
            train_and_log(home, project, classifier=classifier, seed=seed)
    with bentoml_home(models.bentoml_home):
        import bentoml

        ref = f"local:{project}/model_export:v0"
        name = CLASSIFIER_NAME if classifier else REGRESSOR_NAME
        tag = import_model(ref, name=name, home=home).tag
        assert stage_of(bentoml.models.get(tag)) != "prod", "the candidate must not be prod"
    return tag


def hostile_copy(store: Path, tag: str, version: str) -> str:
    """A copy of the model ``tag`` in the BentoML home ``store`` as ``name:version``, whose
    MLflow model ships code of its own (inference.loading refuses it). Its tag."""
    name, old = tag.split(":")
    source, target = store / "models" / name / old, store / "models" / name / version
    shutil.copytree(source, target)
    info = yaml.safe_load((target / "model.yaml").read_text())
    info["version"] = version
    info.setdefault("labels", {})["stage"] = "none"
    (target / "model.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
    with_code_folder(target / "mlflow_model")
    return f"{name}:{version}"


def metric(url: str, name: str, labels: str = "") -> float:
    """The sum of the samples ``name{labels...}`` in the server's ``/metrics`` (0 if none)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    pattern = rf"^{re.escape(name)}(\{{[^}}]*{re.escape(labels)}[^}}]*\}})?\s+(\S+)$"
    return sum(float(m[1]) for m in re.findall(pattern, text, flags=re.MULTILINE))


def hey_errors(output: str) -> Counter:
    """hey's error distribution by kind: ``refused`` (never accepted: nothing was sent),
    ``reset`` / ``eof`` (a connection cut under a request), ``other``."""
    kinds: Counter = Counter()
    section = output.split("Error distribution:", 1)
    if len(section) < 2:
        return kinds
    for count, text in re.findall(r"^\s*\[(\d+)\]\s+(.*)$", section[1], flags=re.MULTILINE):
        if "connection refused" in text:
            kind = "refused"
        elif "reset by peer" in text or "broken pipe" in text:
            kind = "reset"
        elif text.rstrip().endswith("EOF"):
            kind = "eof"
        else:
            kind = "other"
        kinds[kind] += int(count)
    return kinds


def hey_ok(output: str) -> int:
    """The 200 answers in hey's status code distribution."""
    found = re.search(r"^\s*\[200\]\s+(\d+) responses", output, flags=re.MULTILINE)
    return int(found[1]) if found else 0


def hey_command(url: str, body: Path, *, seconds: int, clients: int) -> list[str]:
    return [
        marks.tool("hey", "the load generator: apt-get install -y hey"),
        "-z", f"{seconds}s", "-c", str(clients), "-m", "POST",
        "-T", "application/json", "-D", str(body), url,
    ]  # fmt: skip


def start_hey(url: str, body: Path, *, seconds: int, clients: int) -> subprocess.Popen:
    command = hey_command(url, body, seconds=seconds, clients=clients)
    marks.assert_server_marked("hey")
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def loaded(models: Models, tag: str) -> Any:
    """The model ``tag`` as the service loads it (its contract, checked fast path)."""
    import bentoml

    from inference.bento import fastpath_folder, mlflow_folder
    from inference.model import load_model
    from serving.loading import model_contract

    with bentoml_home(models.bentoml_home):
        model = bentoml.models.get(tag)
        return load_model(mlflow_folder(model), model_contract(model), fastpath_folder(model))
