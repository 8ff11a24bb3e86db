"""The Kubernetes objects of one served model, as plain dicts (``yaml.safe_dump_all`` prints
them): what a pod needs to start slowly, stop without losing a request, and be scraped.

Timing, in the order Kubernetes stops a pod: it removes the pod's endpoint *in parallel with*
running preStop, so the pod keeps accepting for ``PRESTOP_SLEEP_S`` while kube-proxies and
ingress controllers catch up; then SIGTERM starts the service's graceful drain
(``TAGSERVE_DRAIN_SECONDS``), which finishes the requests it holds, each bounded by the
request timeout. The grace period covers all three, or the kubelet SIGKILLs a pod mid-drain.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from release.versions import RELEASE_TAG
from serving.settings import Settings

PORT = 3000  # bentoml serve's default in the image `make container` builds
PRESTOP_SLEEP_S = 10
# BentoML's request timeout: service.py's `traffic={"timeout": 60}` (the tests check it).
REQUEST_TIMEOUT_S = 60
GRACE_MARGIN_S = 10
BENTOML_UID = 1034  # the user BentoML's image runs as (`bentoml` in the container)
PATHS = {"ready": "/readyz", "live": "/livez", "metrics": "/metrics"}
# The settings the pods read; the bento's model argument wins over TAGSERVE_MODEL anyway.
SETTINGS = (
    "TAGSERVE_WORKERS",
    "TAGSERVE_DRAIN_SECONDS",
    "TAGSERVE_MAX_ROWS",
    "TAGSERVE_MAX_BATCH_SIZE",
    "TAGSERVE_MAX_LATENCY_MS",
    "TAGSERVE_PREDICT_QUEUE",
    "TAGSERVE_RETRY_AFTER",
    "TAGSERVE_MONITOR",
)


class ManifestError(ValueError):
    """A model tag or image the manifests cannot be made for."""


@dataclass(frozen=True)
class Options:
    namespace: str = "tagserve"
    host: str = "models.example.com"
    replicas: int = 3
    max_replicas: int = 10
    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "1Gi"
    memory_limit: str = "2Gi"
    workers: int = 2  # one per CPU of the limit


def release_tag(image: str) -> str:
    """The tag of ``image`` (``registry/name:tag``), refused unless it is a release tag."""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag or "@" in image:
        raise ManifestError(f"the image {image!r} has no tag: give it its release tag (X.Y.Z)")
    if not RELEASE_TAG.match(tag):
        raise ManifestError(
            f"the image tag {tag!r} is not a release tag (X.Y.Z or vX.Y.Z): deploy a release"
        )
    return tag


def app_name(model: str) -> str:
    """The objects' name for a model tag ``name:version``: ``tagserve-<name>``, DNS-1123."""
    name = model.partition(":")[0].lower()
    name = re.sub(r"[^a-z0-9-]+", "-", name).strip("-")
    if not name or not model.strip():
        raise ManifestError(f"the model tag {model!r} has no name")
    return f"tagserve-{name}"[:63].rstrip("-")


def grace_seconds(drain_seconds: int) -> int:
    return PRESTOP_SLEEP_S + drain_seconds + REQUEST_TIMEOUT_S + GRACE_MARGIN_S


def settings_values(options: Options) -> dict[str, str]:
    """The TAGSERVE_* settings of the ConfigMap: the service's defaults, the workers sized to
    the CPU limit."""
    defaults = Settings(workers=options.workers)
    values = {
        "TAGSERVE_WORKERS": defaults.workers,
        "TAGSERVE_DRAIN_SECONDS": defaults.drain_seconds,
        "TAGSERVE_MAX_ROWS": defaults.max_rows,
        "TAGSERVE_MAX_BATCH_SIZE": defaults.max_batch_size,
        "TAGSERVE_MAX_LATENCY_MS": defaults.max_latency_ms,
        "TAGSERVE_PREDICT_QUEUE": defaults.predict_queue,
        "TAGSERVE_RETRY_AFTER": defaults.retry_after_s,
        "TAGSERVE_MONITOR": "on" if defaults.monitor else "off",
    }
    return {key: str(values[key]) for key in SETTINGS}


def manifests(model: str, image: str, options: Options | None = None) -> list[dict[str, Any]]:
    """ConfigMap, Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler and Ingress
    of ``model`` served by ``image``."""
    options = options or Options()
    version = release_tag(image)
    name = app_name(model)
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "tagserve"}
    meta = {
        "name": name,
        "namespace": options.namespace,
        "labels": {**labels, "app.kubernetes.io/version": version},
        "annotations": {"tagserve/model": model},
    }
    settings = settings_values(options)
    documents = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": settings},
        deployment(meta, labels, image, options, int(settings["TAGSERVE_DRAIN_SECONDS"])),
        service(meta, labels),
        disruption_budget(meta, labels),
        autoscaler(meta, options),
        ingress(meta, options),
    ]
    # Shared dicts would print as YAML anchors and aliases: each document is its own copy.
    return [json.loads(json.dumps(document)) for document in documents]


def probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def container(name: str, image: str, options: Options) -> dict[str, Any]:
    return {
        "name": "tagserve",
        "image": image,
        "args": ["bentoml", "serve", "--host", "0.0.0.0", "--port", str(PORT)],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": name}}],
        # The model loads before /readyz answers: up to 5 minutes before liveness counts.
        "startupProbe": probe(PATHS["ready"], 5, 60),
        "readinessProbe": probe(PATHS["ready"], 5, 2),
        "livenessProbe": probe(PATHS["live"], 10, 3),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_S)]}}},
        "resources": {
            "requests": {"cpu": options.cpu_request, "memory": options.memory_request},
            "limits": {"cpu": options.cpu_limit, "memory": options.memory_limit},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def deployment(
    meta: dict, labels: dict, image: str, options: Options, drain_seconds: int
) -> dict[str, Any]:
    pod_meta = {
        "labels": {
            **labels,
            "app.kubernetes.io/version": meta["labels"]["app.kubernetes.io/version"],
        },
        "annotations": {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(PORT),
            "prometheus.io/path": PATHS["metrics"],
        },
    }
    spread = {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": labels},
        "matchLabelKeys": ["pod-template-hash"],
    }
    pod = {
        "terminationGracePeriodSeconds": grace_seconds(drain_seconds),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": BENTOML_UID,
            "runAsGroup": BENTOML_UID,
            "fsGroup": BENTOML_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "topologySpreadConstraints": [
            spread,
            {**spread, "topologyKey": "topology.kubernetes.io/zone"},
        ],
        "containers": [container(meta["name"], image, options)],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": labels},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "minReadySeconds": 5,
            "template": {"metadata": pod_meta, "spec": pod},
        },
    }


def service(meta: dict, labels: dict) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def disruption_budget(meta: dict, labels: dict) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta,
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
    }


def autoscaler(meta: dict, options: Options) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"]},
            "minReplicas": options.replicas,
            "maxReplicas": options.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
            # Scale down slowly: each removed pod drains for up to its grace period.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def model_path(meta: dict) -> str:
    """The Ingress path prefix of a model: ``/<model name>/`` (``tagserve-diamonds`` ->
    ``/diamonds/``)."""
    return "/" + meta["name"].removeprefix("tagserve-") + "/"


def ingress(meta: dict, options: Options) -> dict[str, Any]:
    """This model's path on the host every model shares. ingress-nginx merges the Ingresses
    of one host; the rewrite strips the prefix, since every model answers /predict."""
    prefix = model_path(meta).rstrip("/")
    annotations = {
        **meta["annotations"],
        "nginx.ingress.kubernetes.io/use-regex": "true",
        "nginx.ingress.kubernetes.io/rewrite-target": "/$2",
        "nginx.ingress.kubernetes.io/proxy-read-timeout": str(REQUEST_TIMEOUT_S),
    }
    backend = {"service": {"name": meta["name"], "port": {"name": "http"}}}
    path = {"path": f"{prefix}(/|$)(.*)", "pathType": "ImplementationSpecific", "backend": backend}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {**meta, "annotations": annotations},
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{"host": options.host, "http": {"paths": [path]}}],
        },
    }
