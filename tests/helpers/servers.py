"""The server helpers live in ``benchmarks.servers`` (tools outside tests/ import nothing from
tests/); the tests import them from there. Kept for test modules written against this path."""

from benchmarks.servers import (  # noqa: F401
    BENTOML_CLI,
    Server,
    free_port,
    serving,
    start_process,
    start_server,
    tail,
    tree_rss_mb,
)
