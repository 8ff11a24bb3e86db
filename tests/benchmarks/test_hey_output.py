"""benchmarks.hey's reading of hey's output: what is not hey's CSV is refused."""

from __future__ import annotations

import pytest

from benchmarks.hey import LoadError, parse_csv


def test_output_that_is_not_hey_csv_is_refused() -> None:
    with pytest.raises(LoadError, match="no CSV header"):
        parse_csv("Summary:\n  Total: 1.0 secs\n")
