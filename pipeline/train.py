"""Step 5, train: fit preprocessing + random forest as one sklearn Pipeline and export it.

The export is an MLflow model (sklearn + python_function flavors, signature, input example,
pinned requirements) logged as the artifact `model_export`: the inference artifact that the
importer and the service consume.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from inference import strict_json
from inference.constants import INPUT_EXAMPLE, RUNTIME_REQUIREMENTS, SERVING_EXAMPLE
from inference.domain import BOUNDS_METADATA, config_bounds
from inference.loading import ALLOWED_TYPES, single_threaded
from pipeline.errors import PipelineError
from pipeline.segregate import split
from pipeline.tracking import StepContext, git_commit


def feature_columns(features: Mapping[str, Any]) -> list[str]:
    """The input columns the model reads, in a stable order."""
    text = [features["text"]] if features.get("text") else []
    return [*features["numeric"], *features["categorical"], *features["ordinal"], *text]


def build_model(features: Mapping[str, Any], model: Mapping[str, Any]) -> Pipeline:
    """Preprocessing (ColumnTransformer) and the random forest, as one sklearn Pipeline.

    Args:
        features: ``numeric``, ``categorical``, ``ordinal`` ({column: ordered categories}),
            ``text`` (a column or None) and ``tfidf_max_features``.
        model: ``estimator``: the scikit-learn estimator as a Hydra object config
            (``_target_`` and its parameters), built with ``hydra.utils.instantiate``.
    """
    transformers = []
    if features["numeric"]:
        numeric = Pipeline(
            [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
        )
        transformers.append(("numeric", numeric, list(features["numeric"])))
    if features["categorical"]:
        onehot = Pipeline(
            [*impute_missing_categories(), ("encode", OneHotEncoder(handle_unknown="ignore"))]
        )
        transformers.append(("categorical", onehot, list(features["categorical"])))
    if features["ordinal"]:
        ordinal = Pipeline(
            [
                *impute_missing_categories(),
                (
                    "encode",
                    OrdinalEncoder(
                        categories=[list(v) for v in features["ordinal"].values()],
                        handle_unknown="use_encoded_value",
                        unknown_value=-1,
                    ),
                ),
            ]
        )
        transformers.append(("ordinal", ordinal, list(features["ordinal"])))
    if features.get("text"):
        text = Pipeline(
            [
                # Missing text may arrive as NaN or as None: each imputer catches one of them.
                ("impute", SimpleImputer(strategy="constant", fill_value="")),
                (
                    "impute_none",
                    SimpleImputer(missing_values=None, strategy="constant", fill_value=""),
                ),
                ("flatten", FunctionTransformer(np.ravel, feature_names_out="one-to-one")),
                ("tfidf", TfidfVectorizer(max_features=features.get("tfidf_max_features", 100))),
            ]
        )
        transformers.append(("text", text, [features["text"]]))
    estimator = instantiate_estimator(model["estimator"])
    return Pipeline([("preprocess", ColumnTransformer(transformers)), ("model", estimator)])


def impute_missing_categories() -> list[tuple[str, SimpleImputer]]:
    """Steps that impute a missing category, whether it is NaN or None, with the most
    frequent one.

    A missing string is None in a frame read from Parquet (training data, Spark) and NaN in
    one built by the service or pandas from CSV. A NaN imputer alone would leave None in
    place, where the encoder learns it as one more category (penguins' unknown sex): the
    model would then answer differently for the same record depending on how it arrived.
    The NaN imputer comes first: sklearn refuses NaN in the input of an imputer of None.
    """
    return [
        ("impute", SimpleImputer(strategy="most_frequent")),
        ("impute_none", SimpleImputer(missing_values=None, strategy="most_frequent")),
    ]


def instantiate_estimator(spec: Mapping[str, Any]) -> Any:
    """The estimator a ``_target_`` config describes (e.g. ``model/random_forest_regressor``)."""
    from hydra.errors import HydraException
    from hydra.utils import instantiate

    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise PipelineError("model.estimator must name a scikit-learn estimator in _target_")
    try:
        estimator = instantiate(dict(spec))
    except HydraException as exc:
        message = " ".join(str(exc).split()).split(" full_key:")[0]
        raise PipelineError(f"model.estimator: {message}") from None
    if not hasattr(estimator, "fit") or not hasattr(estimator, "predict"):
        raise PipelineError(f"model.estimator {spec['_target_']} is not an estimator")
    return estimator


def task_of(model: Pipeline) -> str:
    return "classification" if hasattr(model, "predict_proba") else "regression"


def score(model: Pipeline, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """Metrics of ``model`` on (X, y): r2/mae/rmse, or accuracy/f1_macro/log_loss."""
    predictions = model.predict(X)
    if task_of(model) == "regression":
        return {
            "r2": float(skm.r2_score(y, predictions)),
            "mae": float(skm.mean_absolute_error(y, predictions)),
            "rmse": float(np.sqrt(skm.mean_squared_error(y, predictions))),
        }
    proba = model.predict_proba(X)
    return {
        "accuracy": float(skm.accuracy_score(y, predictions)),
        "f1_macro": float(skm.f1_score(y, predictions, average="macro")),
        "log_loss": float(skm.log_loss(y, proba, labels=model.classes_)),
    }


def fit(
    frame: pd.DataFrame,
    target: str,
    features: Mapping[str, Any],
    model: Mapping[str, Any],
    val_size: float,
    seed: int,
    stratify: str | None = None,
) -> tuple[Pipeline, dict[str, float], pd.DataFrame, pd.Series]:
    """Fit on trainval minus a validation share; return (model, val metrics, X_val, y_val)."""
    columns = feature_columns(features)
    missing = [c for c in [*columns, target] if c not in frame.columns]
    if missing:
        raise PipelineError(f"training data lacks column(s): {', '.join(missing)}")
    train, val = split(frame, val_size, seed, stratify)
    pipeline = build_model(features, model)
    pipeline.fit(train[columns], train[target])
    # A multi-threaded forest sums its trees in whatever order the threads finish, so the
    # last bits of a prediction vary from run to run: everything after training (validation,
    # the exported model, its consumers) predicts single-threaded and bit-reproducibly.
    single_threaded(pipeline)
    return pipeline, score(pipeline, val[columns], val[target]), val[columns], val[target]


def pinned_requirements(packages: Sequence[str] = RUNTIME_REQUIREMENTS) -> list[str]:
    return [f"{name}=={importlib_metadata.version(name)}" for name in packages]


def export_model(
    model: Pipeline,
    path: Path,
    X: pd.DataFrame,
    metadata: Mapping[str, Any] | None = None,
    rules: Mapping[str, Any] | None = None,
) -> Path:
    """Save ``model`` as an MLflow model at ``path`` (which must not exist).

    The signature is inferred from all of ``X`` (so columns with missing values become
    optional), the input example is its first three rows, and the model is serialized with
    skops. A model holding types beyond ``inference.loading.ALLOWED_TYPES`` is refused here:
    no consumer of the export would load it. ``rules``: the pipeline's ``clean`` and
    ``checks`` config, whose bounds on the input columns are recorded as the MLmodel's
    ``bounds`` metadata (``inference.domain.config_bounds``): part of the model's domain.
    """
    import mlflow.sklearn
    import skops.io
    from mlflow.models import infer_signature

    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    refused = sorted(set(trusted) - ALLOWED_TYPES)
    if refused:
        raise PipelineError(
            f"the model holds type(s) outside tagserve's allow-list ({', '.join(refused)}): "
            "add them to inference.loading.ALLOWED_TYPES once they are known to be safe"
        )

    example = X.head(3)
    predictions = model.predict(example)
    with warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold missing values: the signature is
        # inferred from all training rows, so a column that can be missing is already float.
        warnings.simplefilter("ignore", UserWarning)
        signature = infer_signature(X, model.predict(X.head(100)))
    info = {
        "task": task_of(model),
        "example_predictions": predictions.tolist(),
        "feature_columns": list(X.columns),
    }
    rules = dict(rules or {})
    bounds = config_bounds(rules.get("clean"), rules.get("checks"), list(X.columns))
    if bounds:
        info[BOUNDS_METADATA] = bounds
    if info["task"] == "classification":
        info["classes"] = [c.item() if hasattr(c, "item") else c for c in model.classes_]
    # MLflow warns that it cannot resolve pip's version: the requirements are pinned here.
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=signature,
        input_example=example,
        pip_requirements=pinned_requirements(),
        skops_trusted_types=trusted,
        metadata={**info, **dict(metadata or {})},
    )
    # MLflow writes a missing number in the examples as a bare NaN, which is not JSON: the
    # examples are converted (NaN -> null), so every client can send them as they are.
    strict_json.rewrite(path / INPUT_EXAMPLE)
    strict_json.rewrite(path / SERVING_EXAMPLE, indent=2)
    return path


def plot_diagnostics(
    model: Pipeline, X_val: pd.DataFrame, y_val: pd.Series, out: Path
) -> dict[str, Path]:
    """Feature importance, and residuals (regression) or a confusion matrix (classification)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    names = model[:-1].get_feature_names_out()
    importances = model[-1].feature_importances_
    order = np.argsort(importances)[-20:]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(order) + 1))
    ax.barh([names[i] for i in order], importances[order])
    ax.set_title("Feature importance (impurity)")
    fig.tight_layout()
    plots["feature_importance"] = out / "feature_importance.png"
    fig.savefig(plots["feature_importance"], dpi=80)
    plt.close(fig)
    predictions = model.predict(X_val)
    if task_of(model) == "regression":
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter(predictions, y_val - predictions, s=2, alpha=0.3)
        ax.axhline(0, color="black", lw=1)
        ax.set(
            xlabel="predicted", ylabel="residual (actual - predicted)", title="Validation residuals"
        )
        plots["residuals"] = out / "residuals.png"
    else:
        fig, ax = plt.subplots(figsize=(5, 5))
        skm.ConfusionMatrixDisplay.from_predictions(y_val, predictions, ax=ax)
        ax.set_title("Validation confusion matrix")
        plots["confusion_matrix"] = out / "confusion_matrix.png"
    fig.tight_layout()
    fig.savefig(list(plots.values())[-1], dpi=80)
    plt.close(fig)
    return plots


def run(ctx: StepContext) -> None:
    from omegaconf import OmegaConf

    cfg = ctx.cfg
    trainval = ctx.use(ctx.input_ref("trainval_data"))
    features = OmegaConf.to_container(cfg.features, resolve=True)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    stratify = cfg.split.stratify
    frame = pd.read_parquet(trainval.file())
    model, val_metrics, X_val, y_val = fit(
        frame, cfg.data.target, features, model_cfg, cfg.split.val_size, cfg.split.seed, stratify
    )
    ctx.log_metrics({f"val/{k}": v for k, v in val_metrics.items()})
    plots = plot_diagnostics(model, X_val, y_val, ctx.workdir)
    if ctx.run is not None:
        import wandb

        ctx.run.log({name: wandb.Image(str(path)) for name, path in plots.items()})
    lineage = dict(trainval.metadata.get("lineage", {}))
    lineage["trainval_data"] = {"ref": trainval.qualified_name, "digest": trainval.digest}
    rules = OmegaConf.to_container(cfg, resolve=True)
    export = export_model(
        model,
        ctx.workdir / "model",
        frame[feature_columns(features)],
        {"target": cfg.data.target},
        {"clean": rules.get("clean"), "checks": rules.get("checks")},
    )
    metadata = {
        "task": task_of(model),
        "target": cfg.data.target,
        "val_metrics": val_metrics,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "git_commit": git_commit(),
        "lineage": lineage,
        "run_id": ctx.run_id,
    }
    artifact = ctx.log_artifact(export, "model_export", "model_export", metadata)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in val_metrics.items())
    print(f"train: {len(X_val)} validation rows, {shown} -> {artifact.qualified_name}")
