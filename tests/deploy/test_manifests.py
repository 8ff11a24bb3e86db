"""The Kubernetes manifests: strictly valid for Kubernetes 1.31 to 1.34 (kubernetes-validate,
offline, a warning counts as a failure), and the rules no schema knows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml

from deploy.kubernetes import manifests as k8s
from serving.settings import Settings
from tests.helpers.service_models import PROJECT_ROOT, Models, bentoml_server, subprocess_env

VERSIONS = ("1.31", "1.32", "1.33", "1.34")
IMAGE = "registry.example.com/tagserve:v1.4.2"
MODEL = "diamonds:3kq2nvs7aoq5wwf2"


def stream(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deploy.kubernetes", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    """The manifests as `make manifests` prints them, parsed back."""
    done = stream("--model", MODEL, "--image", IMAGE)
    assert done.returncode == 0, done.stderr
    return list(yaml.safe_load_all(done.stdout))


def of_kind(documents: list[dict], kind: str) -> dict:
    (found,) = [d for d in documents if d["kind"] == kind]
    return found


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly(documents: list[dict], version: str) -> None:
    kinds = set()
    for document in documents:
        # An unknown kind raises SchemaNotFoundError: a failure here, never a warning.
        assert kubernetes_validate.validate(document, version, strict=True) == version
        kinds.add(document["kind"])
    assert kinds == {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Ingress",
    }


def test_strict_validation_catches_a_misspelt_field(documents: list[dict]) -> None:
    """The check can fail: a field no schema has is refused in strict mode."""
    broken = of_kind(documents, "Deployment")
    broken = {**broken, "spec": {**broken["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_the_grace_period_covers_prestop_drain_and_the_request_timeout(
    documents: list[dict],
) -> None:
    pod = of_kind(documents, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    prestop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert prestop[0] == "sleep"
    drain = int(of_kind(documents, "ConfigMap")["data"]["TAGSERVE_DRAIN_SECONDS"])
    assert drain == Settings.drain_seconds
    # The service's own request timeout, read from service.py.
    timeout = re.search(r'traffic=\{"timeout": (\d+)\}', (PROJECT_ROOT / "service.py").read_text())
    assert timeout, "service.py sets no request timeout"
    assert pod["terminationGracePeriodSeconds"] >= int(prestop[1]) + drain + int(timeout[1])


def test_the_rollout_never_drops_below_the_replicas(documents: list[dict]) -> None:
    deployment = of_kind(documents, "Deployment")
    strategy = deployment["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert of_kind(documents, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2


def test_every_selector_matches_the_pod_labels(documents: list[dict]) -> None:
    deployment = of_kind(documents, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        of_kind(documents, "Service")["spec"]["selector"],
        of_kind(documents, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        *(
            c["labelSelector"]["matchLabels"]
            for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        ),
    ]
    for selector in selectors:
        assert selector and selector.items() <= pod_labels.items()
    # The version label changes at each release: a selector on it would orphan old pods.
    assert "app.kubernetes.io/version" not in deployment["spec"]["selector"]["matchLabels"]
    target = of_kind(documents, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_the_pod_runs_as_non_root_with_limits(documents: list[dict]) -> None:
    pod = of_kind(documents, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    assert set(container["resources"]) == {"requests", "limits"}
    assert container["image"] == IMAGE


def test_prometheus_scrapes_the_annotated_pods(documents: list[dict]) -> None:
    annotations = of_kind(documents, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    config = yaml.safe_load((PROJECT_ROOT / "deploy/prometheus/kubernetes.yml").read_text())
    (job,) = config["scrape_configs"]
    relabelled = {
        label.removeprefix("__meta_kubernetes_pod_annotation_").replace(
            "prometheus_io_", "prometheus.io/"
        )
        for rule in job["relabel_configs"]
        for label in rule["source_labels"]
        if label.startswith("__meta_kubernetes_pod_annotation_")
    }
    assert (
        relabelled
        == set(annotations)
        == {
            "prometheus.io/scrape",
            "prometheus.io/port",
            "prometheus.io/path",
        }
    )
    assert annotations["prometheus.io/scrape"] == "true"


def test_two_models_share_one_host_by_path() -> None:
    paths = {}
    for model in ("diamonds:a1", "penguins:b2"):
        ingress = of_kind(k8s.manifests(model, IMAGE), "Ingress")
        (rule,) = ingress["spec"]["rules"]
        assert rule["host"] == k8s.Options.host
        (path,) = rule["http"]["paths"]
        paths[model] = (path["path"], path["backend"]["service"]["name"])
    assert paths == {
        "diamonds:a1": ("/diamonds(/|$)(.*)", "tagserve-diamonds"),
        "penguins:b2": ("/penguins(/|$)(.*)", "tagserve-penguins"),
    }


@pytest.mark.parametrize(
    "image",
    [
        "registry.example.com/tagserve:latest",
        "registry.example.com/tagserve:dev-0123456789ab",
        "registry.example.com:5000/tagserve",
        "tagserve:1.2",
    ],
)
def test_an_image_without_a_release_tag_is_refused_in_one_line(image: str) -> None:
    done = stream("--model", MODEL, "--image", image)
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr


@pytest.mark.server
def test_the_probes_and_the_scrape_path_answer_on_a_real_server(
    documents: list[dict], models: Models, tmp_path: Path
) -> None:
    (container,) = of_kind(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    paths = [
        container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")
    ]
    annotations = of_kind(documents, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    paths.append(annotations["prometheus.io/path"])
    assert container["ports"][0]["containerPort"] == int(annotations["prometheus.io/port"])
    env = subprocess_env(models, TAGSERVE_MODEL=models.regressor)
    log = tmp_path / "bentoml-serve.log"
    with bentoml_server("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=log) as url:
        for path in paths:
            assert httpx.get(f"{url}{path}", timeout=10).status_code == 200, path
        assert httpx.get(f"{url}/no-such-probe", timeout=10).status_code == 404
