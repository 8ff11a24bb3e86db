"""What every tagserve command line shares: one-line usage errors and the error boundary."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from inference.constants import DEBUG_ENV
from inference.errors import one_line


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one `error:` line (argparse prints the usage too)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def run_command(command: Callable[[], int], *, interrupted: str = "error: interrupted") -> int:
    """Run ``command`` and return its exit code; any failure becomes one ``error:`` line on
    stderr and exit 1 (130 when interrupted), never a traceback (unless ``TAGSERVE_DEBUG``)."""
    try:
        return command()
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    except Exception as exc:  # the CLI boundary: one readable line
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
