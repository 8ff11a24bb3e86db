"""Names the pipeline, the importer, the service, the clients and the release share."""

from __future__ import annotations

# The pipeline's default project: its W&B project, local-store namespace and the model's
# name in the BentoML store (pipeline/conf/config.yaml `main.project`).
DEFAULT_PROJECT = "tagserve-diamonds"
DEFAULT_MODEL = f"{DEFAULT_PROJECT}:latest"
# The inference artifact the pipeline logs, and the alias evaluation promotes it to.
MODEL_ARTIFACT = "model_export"
PROD_ALIAS = "prod"
# Where bentoml.mlflow.import_model keeps the MLflow model files inside a BentoML model.
MLFLOW_FOLDER = "mlflow_model"
# Where the importer saves the exact fast path (inference.fastpath) inside a BentoML model,
# and the metadata key of its import-time check (engine, rows checked, exact or not).
FASTPATH_FOLDER = "fastpath"
FASTPATH_METADATA = "fast_path"
# The model's own example request, and its input example ({"columns", "data"}), written by
# MLflow next to MLmodel (and made strict JSON by the pipeline's export).
SERVING_EXAMPLE = "serving_input_example.json"
INPUT_EXAMPLE = "input_example.json"
# What an exported model needs at inference time, pinned to the versions it was trained with.
RUNTIME_REQUIREMENTS = ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy")

# Environment: the model a service serves, and a traceback instead of one line.
MODEL_ENV = "TAGSERVE_MODEL"
DEBUG_ENV = "TAGSERVE_DEBUG"
# MLflow's own loaders (`mlflow models serve/predict`) refuse every sklearn model unless this
# is "true", because they trust what the model folder says. tagserve never sets it for itself
# (inference.loading reads models by its own rules); only the benchmark sets it, for MLflow's
# servers it compares against.
MLFLOW_TRUST_SWITCH = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
