"""Deployment beyond one machine: Kubernetes manifests (``deploy.kubernetes``) and the
Prometheus configurations (``deploy/prometheus``)."""
