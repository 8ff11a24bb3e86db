"""pyspark is a dependency group of its own (`make spark`): without it the Spark command says
which target installs it, in one line, before it reads anything."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers.client_models import PROJECT_ROOT, PYTHON, diamonds_sample

# The clients' CLI in a process where `import pyspark` fails as it does when the package is
# absent (a None entry in sys.modules): the shared environment keeps its pyspark.
WITHOUT_PYSPARK = (
    "import sys; sys.modules['pyspark'] = None; "
    "from clients.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


def test_spark_names_make_spark_when_pyspark_is_missing(client_model: dict, tmp_path: Path):
    rows = tmp_path / "rows.csv"
    diamonds_sample(5).to_csv(rows, index=False)
    out = tmp_path / "scored"
    done = subprocess.run(
        [
            PYTHON,
            "-c",
            WITHOUT_PYSPARK,
            "spark",
            str(rows),
            str(out),
            "--model-dir",
            str(client_model["model_dir"]),
        ],
        cwd=PROJECT_ROOT,
        env=client_model["env"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: the Spark job needs pyspark, which is not installed: run `make spark` (the "
        "project's spark dependency group)"
    ]
    assert not out.exists()
