"""Where the project and its tools are, and how tests shrink the real config."""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "pipeline" / "conf"
PYTHON = sys.executable
VENV_BIN = Path(sys.executable).parent
BENTOML_CLI = str(VENV_BIN / "bentoml")

# Forests are shrunk in tests, never in the default config.
SMALL_FOREST = ["model.estimator.n_estimators=5", "model.estimator.max_depth=8"]
