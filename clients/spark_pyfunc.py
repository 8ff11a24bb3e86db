"""The pyfunc that ``clients.spark`` hands to ``mlflow.pyfunc.spark_udf`` (MLflow "models from
code": this file is copied into a wrapper model, with the core package ``inference`` as its
code, and run on every executor).

It predicts with the very same model, loaded by the core's loader (its trust rules, every
``n_jobs`` 1, the exact fast path when the importer saved one), and fixes the place where a
plain ``spark_udf`` on the exported model would not give the service's predictions: a
missing value in a text column reaches a pandas UDF as ``None``, which models trained before
the pipeline imputed None learned as a category of its own. The service, offline scoring and
training all read NaN there, so NaN it is.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

SKLEARN_ARTIFACT = "sklearn_model"
FASTPATH_ARTIFACT = "fastpath"  # present when the model has a fast path proved exact


class SignatureSafeSklearn(PythonModel):
    def load_context(self, context: Any) -> None:
        from inference.model import load_model

        self.model = load_model(
            context.artifacts[SKLEARN_ARTIFACT],
            fast_folder=context.artifacts.get(FASTPATH_ARTIFACT),
            lazy=True,  # sklearn only if a call needs it: seconds of every worker's start-up
        )
        config = context.model_config or {}
        self.features = list(config["features"])
        self.text_columns = list(config.get("text_columns", []))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        X = model_input[self.features].copy()
        for column in self.text_columns:
            values = X[column].astype(object)
            X[column] = values.where(values.notna(), np.nan)
        return self.model.predict(X)


mlflow.models.set_model(SignatureSafeSklearn())
