"""`python -m clients COMMAND ...`: predict, stream, score, spark, compare, drift (`--help` on
each).

Bad input ends with exit code != 0 and one `error: ...` line on stderr, never a traceback
(set TAGSERVE_DEBUG=1 to see one). Rows are named as a person counts them: the first data row
of a file is row 1. A value outside the model's domain (a category it never learnt, a number
outside the bounds of its training data) is refused as the service refuses it, unless
TAGSERVE_UNKNOWN_CATEGORIES=accept / TAGSERVE_OUT_OF_RANGE=accept (the service's settings).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from clients.errors import ClientError
from inference import strict_json
from inference.cli import OneLineArgumentParser, run_command
from inference.envvars import usable_cores

DEFAULT_URL = os.environ.get("TAGSERVE_URL", "http://127.0.0.1:3000")
SubParsers = argparse._SubParsersAction  # what ``add_subparsers`` returns


def whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
    return value


def positive(text: str) -> int:
    return whole(text, 1)


def non_negative(text: str) -> int:
    return whole(text, 0)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {value}")
    return value


def add_model(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="TAG", help="a BentoML model tag, e.g. name:latest")
    which.add_argument("--model-dir", metavar="DIR", help="an MLflow model folder")


def add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="INPUT", help=".parquet, .csv or .jsonl file")
    p.add_argument("output", metavar="OUTPUT", help="the output file (.parquet, .csv, .jsonl)")
    p.add_argument(
        "--id-column",
        metavar="C",
        help="the input column that identifies a row (default: "
        "the 0-based row number, as column id)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT, never resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_http(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url", default=DEFAULT_URL, help="the service (default %(default)s, or $TAGSERVE_URL)"
    )
    p.add_argument(
        "--timeout", type=seconds, default=30.0, help="seconds per request (default %(default)s)"
    )
    p.add_argument(
        "--retries",
        type=non_negative,
        default=8,
        help="retries of a request after "
        "503 or a connection error, with exponential backoff (default %(default)s)",
    )
    p.add_argument(
        "--max-wait",
        type=seconds,
        default=60.0,
        help="seconds a request may spend waiting between retries in all, whether the "
        "server's Retry-After or the backoff sets them (default %(default)s)",
    )


def backoff_of(args: argparse.Namespace):
    """The retry bounds the HTTP flags ask for."""
    from clients.http import Backoff

    return Backoff(retries=args.retries, max_wait=args.max_wait)


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m clients",
        description="Clients of the tagserve service (predict, stream), offline batch scoring "
        "(score) and the same job on Spark (spark). Progress bars show on a terminal.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_predict(sub)
    add_stream(sub)
    add_score(sub)
    add_spark(sub)
    add_compare(sub)
    add_drift(sub)
    return parser


def add_predict(sub: SubParsers) -> None:
    """``predict``: one record to the service (a JSON object or ``-f`` fields)."""
    p = sub.add_parser("predict", help="send one record to the service, print the prediction")
    p.add_argument(
        "record",
        nargs="?",
        metavar="JSON",
        help="the record as a JSON object (- reads it from stdin)",
    )
    p.add_argument(
        "-f",
        "--field",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a feature value (repeatable); numbers are parsed as numbers",
    )
    add_http(p)
    p.set_defaults(func=cmd_predict)


def add_stream(sub: SubParsers) -> None:
    """``stream``: a file to the service's predict_batch, resumably."""
    p = sub.add_parser(
        "stream",
        help="stream a file to the service's predict_batch, resumably",
        description="INPUT may be - for JSON lines on stdin.",
    )
    add_output(p)
    add_http(p)
    p.add_argument(
        "-c",
        "--concurrency",
        type=positive,
        default=4,
        help="requests in flight (default %(default)s)",
    )
    p.add_argument(
        "-b",
        "--batch-size",
        type=positive,
        default=100,
        help="rows per request (default %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_stream)


def add_score(sub: SubParsers) -> None:
    """``score``: a file scored offline in chunks."""
    p = sub.add_parser("score", help="score a file offline with the model, in chunks")
    add_output(p)
    add_model(p)
    p.add_argument(
        "--chunk-size",
        type=positive,
        default=50_000,
        help="rows per chunk, which bounds memory (default %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=positive,
        default=usable_cores(),
        help="chunks scored at once, one thread each (an offline job: every usable core by "
        "default, here %(default)s); each row is still computed alone, in tree order, so "
        "the predictions are the same whatever the count",
    )
    p.add_argument(
        "--keep-input",
        action="store_true",
        help="write the model's input columns beside the prediction (as the model took "
        "them), so that the output can be tested for drift: clients drift OUTPUT --model TAG",
    )
    p.set_defaults(func=cmd_score)


def add_spark(sub: SubParsers) -> None:
    """``spark``: a file scored with Spark."""
    p = sub.add_parser("spark", help="score a file with Spark (mlflow.pyfunc.spark_udf)")
    p.add_argument("input", metavar="INPUT", help=".parquet or .csv file or folder")
    p.add_argument("output", metavar="OUTPUT", help="output folder of Parquet (or .csv) parts")
    add_model(p)
    p.add_argument(
        "--id-column",
        metavar="C",
        help="the input column that identifies a row (default: the row number)",
    )
    p.add_argument(
        "--master",
        default=os.environ.get("SPARK_MASTER", "local[2]"),
        help="Spark master URL (default %(default)s, or $SPARK_MASTER)",
    )
    p.add_argument(
        "--partitions",
        type=positive,
        default=None,
        help="repartition the input into N partitions first",
    )
    p.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting (repeatable), e.g. spark.executor.memory=4g",
    )
    p.add_argument("--verbose", action="store_true", help="show Spark's own log")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT")
    p.set_defaults(func=cmd_spark)


def add_compare(sub: SubParsers) -> None:
    """``compare``: the model and a candidate on the same file."""
    p = sub.add_parser(
        "compare",
        help="score a file with the model and a candidate; print their agreement "
        "(|diff| for a regressor, agreement ratio for a classifier)",
    )
    p.add_argument("input", metavar="INPUT", help=".parquet, .csv or .jsonl file")
    p.add_argument("--model", metavar="TAG", required=True, help="the live model's tag")
    p.add_argument("--candidate", metavar="TAG", required=True, help="the candidate's tag")
    p.add_argument(
        "--chunk-size",
        type=positive,
        default=50_000,
        help="rows per chunk, which bounds memory (default %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_compare)


def add_drift(sub: SubParsers) -> None:
    """``drift``: a file's rows tested against the model's drift reference."""
    p = sub.add_parser(
        "drift",
        help="test a file's rows for drift against the model's reference (as the service)",
    )
    p.add_argument("input", metavar="FILE", help=".parquet, .csv or .jsonl file")
    p.add_argument("--model", metavar="TAG", required=True, help="a BentoML model tag")
    p.add_argument("--report", metavar="HTML", help="also write the report page there")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_drift)


def cmd_drift(args: argparse.Namespace) -> int:
    from clients.drift import cmd_drift as run

    return run(args)


def cmd_predict(args: argparse.Namespace) -> int:

    from clients.single import parse_record, predict_one, service_for_fields

    service = service_for_fields(args.url, args.timeout, args.retries) if args.field else None
    record = parse_record(args.record, args.field, service)
    result = predict_one(record, url=args.url, timeout=args.timeout, backoff=backoff_of(args))
    print(strict_json.dumps(result))
    return 0


def cmd_stream(args: argparse.Namespace) -> int:

    from clients.stream import stream_file

    summary = stream_file(
        args.input,
        args.output,
        url=args.url,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        id_column=args.id_column,
        timeout=args.timeout,
        backoff=backoff_of(args),
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(strict_json.dumps(summary.as_dict()) if args.json else summary.text())
    if summary.interrupted:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 0 if summary.ok else 1


def cmd_score(args: argparse.Namespace) -> int:
    from clients.model import resolve
    from clients.offline import score_file

    info = resolve(args.model, args.model_dir)
    summary = score_file(
        args.input,
        args.output,
        info,
        chunk_size=args.chunk_size,
        id_column=args.id_column,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        threads=args.threads,
        keep_input=args.keep_input,
    )
    print(summary.line())
    return 0


def cmd_spark(args: argparse.Namespace) -> int:
    from clients.model import resolve
    from clients.spark import score_with_spark

    conf = {}
    for item in args.conf:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ClientError(f"--conf takes KEY=VALUE, not {item!r}")
        conf[key.strip()] = value
    info = resolve(args.model, args.model_dir)
    summary = score_with_spark(
        args.input,
        args.output,
        info,
        master=args.master,
        id_column=args.id_column,
        partitions=args.partitions,
        overwrite=args.overwrite,
        conf=conf,
        quiet=not args.verbose,
    )
    print(summary.line())
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from clients.compare import compare_file
    from clients.model import resolve

    summary = compare_file(
        args.input,
        resolve(args.model),
        resolve(args.candidate),
        chunk_size=args.chunk_size,
    )
    summary.model, summary.candidate = args.model, args.candidate  # as the user named them
    print(json.dumps(summary.as_dict()) if args.json else summary.line())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(
        lambda: args.func(args),
        interrupted="interrupted: run the same command again to resume",
    )


if __name__ == "__main__":
    sys.exit(main())
