"""`make container` for real: a released bento built into an OCI image with buildah, run, called.

Needs root (buildah's chroot isolation with vfs storage) and buildah + debootstrap, which
`.ci/run` installs; without them skipped with the reason (failed under CI). The local base
image is built once and reused; the bento's image is removed afterwards.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pandas as pd
import pytest

from inference.loading import load_pipeline
from tests.helpers import marks
from tests.helpers.release_repos import GIT_IDENTITY, bento_dir, make_repo, run_release
from tests.helpers.service_models import PROJECT_ROOT, free_port, records, subprocess_env

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(os.geteuid() != 0, reason="buildah with chroot isolation needs root"),
]

VERSION = "v0.0.1-container"
BUILDAH_ENV = {**os.environ, "STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}


def pins(lines: list[str]) -> set[tuple[str, str]]:
    """(name, version) of the ``name==version`` lines whose markers hold here."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found = set()
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate():
            (spec,) = req.specifier
            found.add((canonicalize_name(req.name), spec.version))
    return found


def installed_in_image(image: str) -> list[str]:
    """``uv pip freeze`` of the bento's virtualenv inside ``image``."""
    container = subprocess.run(
        ["buildah", "from", image], capture_output=True, text=True, env=BUILDAH_ENV, check=True
    ).stdout.strip()
    try:
        done = subprocess.run(
            ["buildah", "run", container, "--", "uv", "pip", "freeze"]
            + ["--python", "/app/.venv/bin/python"],
            capture_output=True,
            text=True,
            env=BUILDAH_ENV,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, env=BUILDAH_ENV)


def test_container_builds_runs_and_answers_predict(home, tmp_path):
    marks.tool("buildah")
    marks.tool("debootstrap")
    repo = make_repo(tmp_path / "repo", tag=VERSION)
    built = run_release(repo, home, "build")
    assert built.returncode == 0, built.stderr
    env = {
        **subprocess_env(home, PORT=str(free_port())),
        **GIT_IDENTITY,
        "PYTHON": str(PROJECT_ROOT / ".venv" / "bin" / "python"),
        "BENTOML": str(PROJECT_ROOT / ".venv" / "bin" / "bentoml"),
        "TMPDIR": str(tmp_path),
    }
    try:
        done = subprocess.run(
            [str(PROJECT_ROOT / "scripts" / "container.sh"), f"tagserve:{VERSION}"],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        # The answer to the model's first example row is scikit-learn's prediction of it.
        answered = re.search(r"^-> (.*)$", done.stdout, flags=re.MULTILINE)
        assert answered, done.stdout[-2000:]
        row = pd.DataFrame(records(home.example(home.regressor))[:1])
        expected = load_pipeline(home.mlflow_folder(home.regressor)).predict(row)
        assert json.loads(answered[1]) == {"prediction": float(expected[0])}
        assert f"bento tagserve:{VERSION}" in done.stdout
        assert f"image localhost/tagserve:{VERSION} answers /predict" in done.stdout
        # The image holds exactly the bento's pins (uv.lock's serve group), nothing resolved.
        wanted = bento_dir(home, f"tagserve:{VERSION}") / "env/python/requirements.txt"
        installed = installed_in_image(f"localhost/tagserve:{VERSION}")
        assert pins(installed) == pins(wanted.read_text().splitlines())
    finally:
        subprocess.run(
            ["buildah", "rmi", "-f", f"localhost/tagserve:{VERSION}"],
            capture_output=True,
            env={**os.environ, "STORAGE_DRIVER": "vfs"},
        )
