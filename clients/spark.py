"""The offline batch job on Apache Spark, with ``mlflow.pyfunc.spark_udf``.

Why ``spark_udf`` and not ``bentoml.batch.run_in_spark``: BentoML's Spark support drives a
*legacy* ``bentoml.Service`` through its IO descriptors (``svc.apis[name].input.from_arrow``)
and starts a whole HTTP server per partition inside each executor, from a built and exported
bento. Our service is a new-SDK ``@bentoml.service`` class, which it cannot drive, and every
batch would make a JSON round trip through the service's validation. ``spark_udf`` ships an
MLflow model to the executors itself and calls it on Arrow batches, with no server.

Exactly the service's predictions: the model handed to ``spark_udf`` is a thin pyfunc
wrapper (``clients/spark_pyfunc.py``, saved per run with the core package ``inference`` as its
code) around the very same sklearn Pipeline
artifact. A plain ``spark_udf`` on the exported model is exact for complete rows, but differs
in two places, both measured: a null in a text column arrives as None, which sklearn's
imputers do not treat as missing (a penguin with unknown sex changes species), and the
forest's saved ``n_jobs=-1`` sums trees in thread order (last bits of a regression vary from
run to run). The wrapper turns None into NaN and sets ``n_jobs=1``, as the service does, and
columns are cast to the signature's types in Spark before the call.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import inference
from clients.errors import ClientError
from clients.io import DEFAULT_ID, PREDICTION
from clients.model import ModelInfo
from inference.contract import TYPES, type_of_value

# The artifact names clients/spark_pyfunc.py loads (it cannot import this module: it runs
# on the executors with only the core package as its code).
SKLEARN_ARTIFACT = "sklearn_model"
FASTPATH_ARTIFACT = "fastpath"

# Inside every Python worker: keep any joblib pool of the model to one thread (the loader
# also sets n_jobs=1).
WORKER_ENV = {"LOKY_MAX_CPU_COUNT": "1"}
PYFUNC_CODE = Path(__file__).with_name("spark_pyfunc.py")
CORE_PACKAGE = Path(inference.__file__).parent  # shipped as the wrapper's code


@dataclass
class SparkSummary:
    rows: int
    seconds: float
    output: str
    master: str

    def line(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        return (
            f"spark ({self.master}): scored {self.rows:,} rows in {self.seconds:.1f} s "
            f"({rate:,.0f} rows/s, session start included) -> {self.output}"
        )


def require_pyspark() -> None:
    """pyspark is a dependency group of its own (it is large, and only this job needs it)."""
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise ClientError(
            "the Spark job needs pyspark, which is not installed: run `make spark` (the "
            "project's spark dependency group)"
        ) from exc


def java_available() -> bool:
    """Whether a Java runtime is on PATH (or JAVA_HOME): Spark needs one."""
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").exists():
        return True
    return shutil.which("java") is not None


def result_type(info: ModelInfo) -> str:
    """The Spark type of a prediction: double, or the classes' type (text if they mix)."""
    if info.task != "classification":
        return TYPES["double"].spark
    kinds = {type_of_value(c) for c in info.classes or []}
    return TYPES[kinds.pop() if len(kinds) == 1 else "string"].spark


QUIET_LOG4J = """\
rootLogger.level = off
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
"""


def session(
    master: str = "local[2]",
    app_name: str = "tagserve-score",
    quiet: bool = True,
    conf: dict[str, str] | None = None,
):
    """A SparkSession whose Python workers can load the model.

    Local masters run the workers with this Python (``PYSPARK_PYTHON`` wins if set); on a
    cluster, every node needs this project's environment at ``PYSPARK_PYTHON``. ``quiet``
    turns Spark's own console log off: failures still end as one ``error:`` line.
    """
    require_pyspark()
    if not java_available():
        raise ClientError(
            "Spark needs a Java runtime (17 or 21): install one, e.g. "
            "apt-get install openjdk-17-jre-headless, or set JAVA_HOME"
        )
    local = master.startswith("local")
    os.environ.update(WORKER_ENV)  # local-mode workers inherit the driver's environment
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if local:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
    )
    for key, value in WORKER_ENV.items():
        builder = builder.config(f"spark.executorEnv.{key}", value)
    if local:
        # Bind the driver to loopback: nothing listens beyond this machine.
        builder = builder.config("spark.driver.host", "127.0.0.1").config(
            "spark.driver.bindAddress", "127.0.0.1"
        )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    if quiet:
        log4j = Path(tempfile.gettempdir()) / "tagserve-spark-log4j2.properties"
        log4j.write_text(QUIET_LOG4J)
        builder = builder.config(
            "spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log4j}"
        )
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # Py4J / Java start-up errors: one readable line
        raise ClientError(f"cannot start Spark ({master}): {_first_line(exc)}") from exc
    if quiet:
        spark.sparkContext.setLogLevel("OFF")
    return spark


def _read(spark, path: str, fmt: str):
    if fmt == "parquet":
        return spark.read.parquet(path)
    # Text columns stay text; each one is cast to its signature type below, so that a CSV
    # value reads as the same double as in pandas (both parse to the nearest double).
    return spark.read.option("header", "true").option("inferSchema", "false").csv(path)


def with_row_numbers(df, name: str):
    """Add ``name``: the 0-based position of each row in the order Spark reads the input.

    For one input file this is the row number in the file (Spark splits a file into
    consecutive ranges). Computed without a shuffle or a single-partition window:
    ``monotonically_increasing_id`` is (partition << 33) + position in the partition, and one
    small job counts the rows per partition to turn that into a global offset.
    """
    from pyspark.sql import functions as F

    df = df.withColumn("_tagserve_pid", F.spark_partition_id()).withColumn(
        "_tagserve_mid", F.monotonically_increasing_id()
    )
    counts = sorted(
        (r["_tagserve_pid"], r["count"]) for r in df.groupBy("_tagserve_pid").count().collect()
    )
    offsets, total = {}, 0
    for pid, count in counts:
        offsets[pid] = total
        total += count
    mapping = F.create_map(*[F.lit(x) for pid, off in offsets.items() for x in (pid, off)])
    offset = mapping[F.col("_tagserve_pid")] if offsets else F.lit(0)
    position = F.col("_tagserve_mid") - F.shiftleft(F.col("_tagserve_pid").cast("long"), 33)
    return df.withColumn(name, (offset + position).cast("long")).drop(
        "_tagserve_pid", "_tagserve_mid"
    )


def check_domain(df, info: ModelInfo, id_name: str, numbered: bool) -> None:
    """Refuse, as the service and ``score`` do, the input if a row holds a value outside the
    model's domain (where enforced): one filtering pass before the job, the first such row
    named (by its row number counted from 1, or its id) with the column, value and domain."""
    from functools import reduce
    from operator import or_

    from pyspark.sql import functions as F

    if info.domain_from_pipeline:  # a plain folder: its domain is its fitted Pipeline's
        from clients.model import domain_contract
        from inference.loading import load_pipeline

        info.contract = domain_contract(info, load_pipeline(info.path))
        info.domain_from_pipeline = False
    outside = []
    for col in info.columns:
        value = F.col(col.name)
        if col.categories is not None:
            outside.append(value.isNotNull() & ~value.isin(list(col.categories)))
        elif col.range is not None:
            bounds, sides = col.range, []
            if bounds.low is not None:
                sides.append(value <= bounds.low if bounds.low_exclusive else value < bounds.low)
            if bounds.high is not None:
                sides.append(value >= bounds.high if bounds.high_exclusive else value > bounds.high)
            # Spark orders NaN above every number: not a value out of range
            outside.append(value.isNotNull() & ~F.isnan(value) & reduce(or_, sides))
    if not outside:
        return
    first = df.filter(reduce(or_, outside)).orderBy(id_name).limit(1).collect()
    if not first:
        return
    row = first[0]
    where = f"row {row[id_name] + 1}" if numbered else f"the row of {id_name} {row[id_name]!r}"
    for col in info.columns:
        problem = None if row[col.name] is None else col.domain_problem(row[col.name])
        if problem:
            raise ClientError(f"column {col.name!r} in {where}: {problem}")


def score_with_spark(
    input: str | Path,
    output: str | Path,
    info: ModelInfo,
    *,
    master: str = "local[2]",
    id_column: str | None = None,
    partitions: int | None = None,
    overwrite: bool = False,
    conf: dict[str, str] | None = None,
    quiet: bool = True,
    spark=None,
) -> SparkSummary:
    """Score ``input`` with Spark into the folder ``output`` (id column + ``prediction``).

    ``input`` is a .parquet or .csv file, or a folder of Parquet files (or of CSV files when
    its name ends with .csv); ``output`` is a folder of Parquet parts, or CSV parts when it
    ends with ``.csv``. Without ``id_column`` the id is the row number in the order Spark
    reads the input: the file's row number for one file (pass ``id_column`` for a folder).
    """
    from clients.io import file_format

    require_pyspark()
    input, output = str(input), str(output)
    fmt = "parquet" if Path(input).is_dir() and not input.endswith(".csv") else file_format(input)
    if fmt not in ("parquet", "csv"):
        raise ClientError("Spark reads .parquet or .csv input")
    out_fmt = "csv" if output.endswith(".csv") else "parquet"
    if "://" not in input and not Path(input).exists():
        raise ClientError(f"input {input} does not exist")
    if "://" not in output and Path(output).exists() and not overwrite:
        raise ClientError(f"{output} already exists (pass --overwrite to replace it)")

    start = time.perf_counter()
    owns_session = spark is None
    spark = spark or session(master, quiet=quiet, conf=conf)
    try:
        rows = _run(spark, input, fmt, output, out_fmt, info, id_column, partitions)
    finally:
        if owns_session:
            spark.stop()
    return SparkSummary(rows, time.perf_counter() - start, output, master)


def _run(spark, input, fmt, output, out_fmt, info, id_column, partitions) -> int:
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    try:
        df = _read(spark, input, fmt)
    except PySparkException as exc:
        raise ClientError(f"Spark cannot read {input}: {_first_line(exc)}") from exc
    missing = [c.name for c in info.columns if c.required and c.name not in df.columns]
    if missing:
        raise ClientError(f"input lacks model column(s): {', '.join(missing)}")
    if id_column and id_column not in df.columns:
        raise ClientError(f"input has no id column {id_column!r}")
    id_name = id_column or DEFAULT_ID
    if not id_column:
        df = with_row_numbers(df, id_name)
    features = []
    for col in info.columns:
        spark_type = TYPES[col.type].spark
        value = F.col(col.name) if col.name in df.columns else F.lit(None)
        features.append(value.cast(spark_type).alias(col.name))
    df = df.select(F.col(id_name), *features)
    check_domain(df, info, id_name, numbered=not id_column)
    if partitions:
        df = df.repartition(partitions)
    scratch = Path(tempfile.mkdtemp(prefix="tagserve-spark-"))
    try:
        return _score(spark, df, info, id_name, output, out_fmt, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _score(spark, df, info, id_name, output, out_fmt, scratch: Path) -> int:
    import mlflow.pyfunc
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    # spark_udf warns that env_manager="local" reuses this environment: that is the point.
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    wrapper = wrap_model(info, scratch / "model")
    udf = mlflow.pyfunc.spark_udf(
        spark,
        model_uri=str(wrapper),
        result_type=result_type(info),
        env_manager="local",
        extra_env=WORKER_ENV,
    )
    scored = df.select(F.col(id_name), udf(F.struct(*info.features)).alias(PREDICTION))
    writer = scored.write.mode("overwrite")
    try:
        if out_fmt == "csv":
            writer.option("header", "true").csv(output)
            return spark.read.option("header", "true").csv(output).count()
        writer.parquet(output)
        return spark.read.parquet(output).count()
    except PySparkException as exc:
        raise ClientError(f"the Spark job failed: {_first_line(exc)}") from exc


def wrap_model(info: ModelInfo, dest: Path) -> Path:
    """Save the null-safe, single-threaded pyfunc wrapper of ``info``'s model at ``dest``."""
    import mlflow.pyfunc
    from mlflow.models import Model

    original = Model.load(str(info.path))
    requirements = info.path / "requirements.txt"
    pins = [
        line.strip()
        for line in (requirements.read_text().splitlines() if requirements.is_file() else [])
        if line.strip() and not line.startswith("#")
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no input example": the signature is the original's
        mlflow.pyfunc.save_model(
            path=str(dest),
            python_model=str(PYFUNC_CODE),
            artifacts=artifacts_of(info),
            code_paths=[str(CORE_PACKAGE)],
            model_config={
                "features": info.features,
                "text_columns": [c.name for c in info.columns if TYPES[c.type].python is str],
            },
            signature=original.signature,
            pip_requirements=pins or None,
        )
    return dest


def artifacts_of(info: ModelInfo) -> dict[str, str]:
    """The wrapper's artifacts: the MLflow model, and the fast path the importer proved exact
    when the model comes from the BentoML store (the wrapper re-checks it when loading)."""
    artifacts = {SKLEARN_ARTIFACT: str(info.path)}
    if info.fast_path is not None:
        artifacts[FASTPATH_ARTIFACT] = str(info.fast_path)
    return artifacts


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
