"""The batch job on Spark in local mode (`mlflow.pyfunc.spark_udf`): the same ids and the exact
predictions of the model itself. Needs a Java runtime (`.ci/run` installs one; without it
skipped, failed under CI)."""

from __future__ import annotations

import json
import subprocess
import textwrap

import numpy as np
import pandas as pd
import pytest

from clients.spark import java_available
from tests.helpers import marks
from tests.helpers.client_models import (
    PROJECT_ROOT,
    PYTHON,
    diamonds_sample,
    native_predictions,
    read_output,
    train_penguins,
)


def native_labels(model_dir, frame: pd.DataFrame) -> list[str]:
    from inference.loading import load_pipeline

    model = load_pipeline(model_dir)
    model.set_params(model__n_jobs=1)
    return model.predict(frame[model.feature_names_in_]).tolist()


pytestmark = [pytest.mark.timeout(400), pytest.mark.server]


@pytest.fixture(autouse=True)
def java() -> None:
    """Spark needs a Java runtime (a failure under CI, a skip elsewhere)."""
    if not java_available():
        marks.missing("a Java runtime", "apt-get install -y default-jre-headless")


# One Spark session for two jobs: starting a session (a JVM) is the slow part of a job.
DRIVER = textwrap.dedent(
    """
    import json, sys
    from clients.model import read_model_info, resolve
    from clients.spark import score_with_spark, session

    tag, csv_in, parquet_in, out1, out2, penguin_dir, penguins_in, out3 = sys.argv[1:]
    info = resolve(model=tag)  # from the BentoML store: with the fast path the import checked
    assert info.fast_path is not None
    # Small splits: the CSV is read as several partitions, so row numbers must add up.
    spark = session("local[2]", conf={"spark.sql.files.maxPartitionBytes": "40000"})
    try:
        partitions = spark.read.option("header", "true").csv(csv_in).rdd.getNumPartitions()
        first = score_with_spark(csv_in, out1, info, spark=spark)
        second = score_with_spark(
            parquet_in, out2, info, id_column="sku", partitions=3, spark=spark
        )
        third = score_with_spark(penguins_in, out3, read_model_info(penguin_dir), spark=spark)
    finally:
        spark.stop()
    rows = [first.rows, second.rows, third.rows]
    print(json.dumps({"partitions": partitions, "rows": rows}))
    """
)


def test_spark_local_mode_gives_the_exact_predictions_with_ids(tmp_path, client_model):
    shared = {**client_model, "env": dict(client_model["env"])}
    model_dir = shared["model_dir"]
    penguin_dir = train_penguins(tmp_path / "penguins-model")
    rows = diamonds_sample(1500, seed=3)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    rows.to_parquet(tmp_path / "rows.parquet", row_group_size=400)
    out1, out2, out3 = tmp_path / "by_row", tmp_path / "by_sku.csv", tmp_path / "penguins"
    penguins_in = PROJECT_ROOT / "data" / "penguins.csv"
    env = shared["env"]  # its BentoML home holds the imported model
    args = [shared["tag"], tmp_path / "rows.csv", tmp_path / "rows.parquet", out1, out2]
    args += [penguin_dir, penguins_in, out3]
    done = subprocess.run(
        [PYTHON, "-c", DRIVER, *map(str, args)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["partitions"] > 1
    assert report["rows"] == [1500, 1500, 344]
    expected = native_predictions(model_dir, rows)

    # CSV in, no id column: the id is the row number in the file, across partitions.
    by_row = read_output(out1).sort_values("id")
    assert by_row["id"].tolist() == list(range(1500))
    np.testing.assert_array_equal(by_row["prediction"].to_numpy(), expected)

    # Parquet in, an id column, shuffled into 3 partitions, CSV parts out.
    parts = sorted(out2.glob("part-*.csv"))
    by_sku = pd.concat(read_output(p) for p in parts).set_index("sku").loc[rows["sku"]]
    np.testing.assert_array_equal(by_sku["prediction"].to_numpy(), expected)

    # A classifier whose text column has nulls (penguins of unknown sex): Spark hands them
    # to Python as None, which the wrapper turns into the NaN that sklearn's imputer expects.
    penguins = pd.read_csv(penguins_in)
    assert penguins["sex"].isna().any()
    labels = read_output(out3).sort_values("id")
    assert labels["id"].tolist() == list(range(len(penguins)))
    assert labels["prediction"].tolist() == native_labels(penguin_dir, penguins)


DOMAIN_DRIVER = textwrap.dedent(
    """
    import json, os, sys
    from clients.errors import ClientError
    from clients.model import resolve
    from clients.spark import score_with_spark, session

    tag, model_dir, csv_in, parquet_in, out = sys.argv[1:]
    spark = session("local[2]")
    messages = []
    try:
        for source, info, id_column in (
            (csv_in, resolve(model=tag), None),
            (parquet_in, resolve(model=tag), "sku"),
            (csv_in, resolve(model_dir=model_dir), None),
        ):
            try:
                score_with_spark(source, out, info, id_column=id_column, spark=spark)
                messages.append(None)
            except ClientError as exc:
                messages.append(str(exc))
        os.environ["TAGSERVE_UNKNOWN_CATEGORIES"] = "accept"
        os.environ["TAGSERVE_OUT_OF_RANGE"] = "accept"
        accepted = score_with_spark(csv_in, out, resolve(model=tag), spark=spark).rows
    finally:
        spark.stop()
    print(json.dumps({"messages": messages, "accepted": accepted}))
    """
)


def test_spark_refuses_a_value_outside_the_domain_naming_its_row(tmp_path, client_model):
    """One filtering pass before the job: the first row outside the model's domain is named
    by its row number counted from 1 (or by its id), with the column, value and domain; from
    the BentoML model's recorded domain and from a plain folder's Pipeline. Accepted by the
    service's settings, it is scored."""
    rows = diamonds_sample(200, seed=4)
    rows["cut"] = rows["cut"].astype(object)
    rows.loc[5, "cut"] = "Superb"  # the 6th data row
    rows.loc[9, "carat"] = -5.0
    rows.to_csv(tmp_path / "rows.csv", index=False)
    rows.to_parquet(tmp_path / "rows.parquet")
    args = [client_model["tag"], client_model["model_dir"], tmp_path / "rows.csv"]
    args += [tmp_path / "rows.parquet", tmp_path / "out"]
    done = subprocess.run(
        [PYTHON, "-c", DOMAIN_DRIVER, *map(str, args)],
        cwd=PROJECT_ROOT,
        env=dict(client_model["env"]),
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    cuts = "'Fair', 'Good', 'Very Good', 'Premium', 'Ideal'"
    assert report["messages"] == [
        f"column 'cut' in row 6: 'Superb' is not one of {cuts}",
        f"column 'cut' in the row of sku 'sku-000005': 'Superb' is not one of {cuts}",
        f"column 'cut' in row 6: 'Superb' is not one of {cuts}",
    ]
    assert report["accepted"] == 200
