"""Temporary git repositories holding the project's service, for the release and container
tests, and the release CLI run in them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.helpers.service_models import PROJECT_ROOT, PYTHON, Models, subprocess_env

# What a bento needs from the project: the service, the packages it imports, and the lock its
# Python packages come from.
SERVICE_FILES = ("service.py", "bentofile.yaml", ".gitignore", "pyproject.toml", "uv.lock")
SERVICE_PACKAGES = ("inference", "serving")

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "tagserve tests",
    "GIT_AUTHOR_EMAIL": "tests@tagserve.invalid",
    "GIT_COMMITTER_NAME": "tagserve tests",
    "GIT_COMMITTER_EMAIL": "tests@tagserve.invalid",
}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_IDENTITY}
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


def make_repo(path: Path, tag: str | None = None) -> Path:
    """A git repository holding the project's service, bentofile and lock, one commit,
    ``tag``."""
    path.mkdir(parents=True)
    for name in SERVICE_FILES:
        shutil.copy(PROJECT_ROOT / name, path / name)
    for package in SERVICE_PACKAGES:
        shutil.copytree(
            PROJECT_ROOT / package, path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    git(path, "init", "-q", "-b", "main")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "tagserve")
    if tag:
        git(path, "tag", "-a", tag, "-m", tag)
    return path


def run_release(repo: Path, home: Models, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "release", *args],
        cwd=repo,
        env={**subprocess_env(home, **env), **GIT_IDENTITY},
        capture_output=True,
        text=True,
        timeout=300,
    )


def bento_dir(home: Models, tag: str) -> Path:
    name, version = tag.split(":")
    return home.bentoml_home / "bentos" / name / version
