"""`python -m importers [SOURCE] [--name N] [--home DIR] [--project P] [--entity E] [--json]`.

Prints one line, ``imported <tag> from <source> (digest ...)`` or ``already imported ...``
(or a JSON object with ``--json``), exit 0. On failure: one line ``error: ...`` on stderr,
exit 1 (2 for bad usage), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from inference import strict_json
from inference.cli import OneLineArgumentParser, run_command

EPILOG = """\
sources:
  model_export:prod                       the pipeline's local store (the default:
                                          what `make demo` leaves)
  local:[project/]model_export:v2         the local store, any alias or version
  wandb:[entity/]project/model_export:prod
                                          W&B (entity/project default: WANDB_ENTITY/WANDB_PROJECT)
  dir:/path/to/model  or  /path/to/model  an MLflow model folder (`wandb artifact get --root`)
  runs:/<run_id>/model  models:/<name>@<alias>
                                          MLflow URIs
"""


def build_parser() -> argparse.ArgumentParser:
    from importers.core import DEFAULT_MODEL_NAME

    parser = OneLineArgumentParser(
        prog="python -m importers",
        description="Import the prod MLflow model into the BentoML model store: verified, "
        "idempotent, atomic, with lineage.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", nargs="?", default=None, help="what to import (see below)")
    parser.add_argument(
        "--name", default=None, help=f"BentoML model name (default {DEFAULT_MODEL_NAME})"
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="pipeline home (default $TAGSERVE_HOME or .tagserve)",
    )
    parser.add_argument("--project", default=None, help="local-store / W&B project")
    parser.add_argument("--entity", default=None, help="W&B entity (default $WANDB_ENTITY)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the importer CLI; returns the exit code."""
    args = build_parser().parse_args(argv)
    _quiet_libraries()

    def command() -> int:
        from importers.core import import_model

        result = import_model(
            args.source, name=args.name, home=args.home, project=args.project, entity=args.entity
        )
        print(strict_json.dumps(result.to_dict()) if args.json else result.line())
        return 0

    return run_command(command, interrupted="error: interrupted (nothing was imported)")


def _quiet_libraries() -> None:
    # BentoML, MLflow and W&B log at INFO/WARNING to the terminal; the importer's own line
    # (or its error line) is the whole output.
    warnings.filterwarnings("ignore")
    for name in ("bentoml", "mlflow", "wandb", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
