"""The pyfunc that ``clients.spark`` hands to ``mlflow.pyfunc.spark_udf`` (MLflow "models from
code": this file is copied into a wrapper model and run on every executor, so it imports
nothing from the project).

It predicts with the very same sklearn Pipeline (an artifact of the wrapper, loaded with
MLflow's sklearn flavor) and fixes the two places where a plain ``spark_udf`` on the exported
model would not give the service's predictions:

- a missing value in a text column reaches a pandas UDF as ``None``; sklearn's imputers
  treat only NaN as missing (None becomes an unknown category instead). The service, offline
  scoring and training all hold NaN there, so NaN it is.
- ``n_jobs=1`` on every estimator: a forest predicting with threads sums its trees in the
  order the threads finish, which changes the last bits of a regression.
"""

from __future__ import annotations

import os
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

SKLEARN_ARTIFACT = "sklearn_model"


class SignatureSafeSklearn(PythonModel):
    def load_context(self, context: Any) -> None:
        import mlflow.sklearn

        name = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"  # this project's own, verified model
        previous = os.environ.get(name)
        os.environ[name] = "true"
        try:
            model = mlflow.sklearn.load_model(context.artifacts[SKLEARN_ARTIFACT])
        finally:
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous
        jobs = {k: 1 for k in model.get_params(deep=True) if k.split("__")[-1] == "n_jobs"}
        if jobs:
            model.set_params(**jobs)
        config = context.model_config or {}
        self.model = model
        self.features = list(config["features"])
        self.text_columns = list(config.get("text_columns", []))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        X = model_input[self.features].copy()
        for column in self.text_columns:
            values = X[column].astype(object)
            X[column] = values.where(values.notna(), np.nan)
        return self.model.predict(X)


mlflow.models.set_model(SignatureSafeSklearn())
