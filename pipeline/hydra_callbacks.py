"""Hydra callbacks: keep credentials out of the files Hydra saves for every run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from artifacts.urls import redact_url

# Anything URL-shaped in a saved YAML file (a value, or an override `data.url=...`).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


def redact_file(path: Path) -> bool:
    """Rewrite ``path`` with every URL in it redacted; True if anything changed."""
    text = path.read_text()
    redacted = _URL.sub(lambda m: redact_url(m.group(0)), text)
    if redacted == text:
        return False
    path.write_text(redacted)
    return True


class RedactSavedUrls(Callback):
    """Hydra writes ``config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` into the run's
    ``.hydra`` folder, and a sweep's ``multirun.yaml``, before the job starts; a ``data.url``
    with a password or a token would stay there in clear. This redacts them right after they
    are written, before any step runs."""

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        hydra = config.hydra
        folders = []
        if hydra.output_subdir is not None:
            folders.append(Path(hydra.runtime.output_dir) / hydra.output_subdir)
        if str(hydra.mode) == "RunMode.MULTIRUN":
            folders.append(Path(hydra.sweep.dir))  # multirun.yaml, saved after on_multirun_start
        for folder in folders:
            for path in folder.glob("*.yaml"):
                redact_file(path)
