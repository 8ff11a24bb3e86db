"""The server helpers of the benchmarks and the tests (``benchmarks.servers``: tools outside
tests/ import nothing from tests/), with the tests' guard: only a test marked ``server`` may
start one."""

import benchmarks.servers
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
from tests.helpers.marks import assert_server_marked

benchmarks.servers.before_start = assert_server_marked
