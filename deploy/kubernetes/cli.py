"""``python -m deploy.kubernetes --model TAG --image IMAGE``: the manifests of one model as
one YAML stream on stdout. A refusal prints one line, ``error: ...``, and exits with 1."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import yaml

from deploy.kubernetes.manifests import ManifestError, Options, manifests
from inference.cli import OneLineArgumentParser


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m deploy.kubernetes",
        description="Kubernetes manifests of one tagserve model: Deployment, Service, "
        "PodDisruptionBudget, HorizontalPodAutoscaler, ConfigMap, Ingress.",
    )
    parser.add_argument("--model", required=True, help="the model tag the image serves")
    parser.add_argument(
        "--image", required=True, help="the image, tagged with its release tag (X.Y.Z, vX.Y.Z)"
    )
    parser.add_argument("--namespace", default=Options.namespace)
    parser.add_argument("--host", default=Options.host, help="the Ingress host the models share")
    parser.add_argument("--replicas", type=int, default=Options.replicas)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = Options(namespace=args.namespace, host=args.host, replicas=args.replicas)
    try:
        documents = manifests(args.model, args.image, options)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    yaml.safe_dump_all(documents, sys.stdout, sort_keys=False, explicit_start=True)
    return 0
