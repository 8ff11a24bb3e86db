"""Kubernetes manifests of a tagserve image, generated per model (``python -m deploy.kubernetes``
or ``make manifests``); docs/deploying.md walks through them."""
