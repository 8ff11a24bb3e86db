"""Clients of the tagserve service, offline batch scoring, and the same job on Spark.

- ``clients.single.predict_one``: one record -> the service's answer (retries 503s).
- ``clients.stream.stream_file``: a file -> ``predict_batch`` with N concurrent requests of
  K rows, input order kept, resumable.
- ``clients.offline.score_file``: a file -> the model itself, in chunks, resumable.
- ``clients.spark.score_with_spark``: the same job on Spark with ``mlflow.pyfunc.spark_udf``.

``python -m clients --help`` lists the command-line versions.
"""

from clients.errors import ClientError

__all__ = ["ClientError"]
