"""The rehearsal's bentos, built in a scratch folder: two release tags of the diamonds model
(the second from a model retrained with another seed) and one of the penguins model. The
user's repository is only read: the scratch repositories are copies, tagged there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# What a bento needs from the project: the service, the packages it imports, and the lock its
# Python packages come from.
SERVICE_FILES = ("service.py", "bentofile.yaml", ".gitignore", "pyproject.toml", "uv.lock")
SERVICE_PACKAGES = ("inference", "serving")
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "tagserve rehearsal",
    "GIT_AUTHOR_EMAIL": "rehearsal@tagserve.invalid",
    "GIT_COMMITTER_NAME": "tagserve rehearsal",
    "GIT_COMMITTER_EMAIL": "rehearsal@tagserve.invalid",
}
DIAMONDS_TAGS = ("v1.0.0", "v1.1.0")
PENGUINS_TAG = "v1.0.0"
DIAMONDS_SEEDS = (42, 7)


class BuildError(RuntimeError):
    """A step of the build failed: its command and the end of its output."""


@dataclass(frozen=True)
class Bentos:
    """The built bentos (``name:version``) and the model tag each one serves."""

    bentoml_home: Path
    diamonds: tuple[str, str]
    penguins: str
    models: dict[str, str]  # model tag (X-Tagserve-Model) -> bento tag


def environment(scratch: Path) -> dict[str, str]:
    """The build's environment: scratch homes, the project's venv first on PATH, offline."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BENTOML_", "TAGSERVE_", "WANDB_", "MLFLOW_"))
    }
    env.update(
        PATH=f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}",
        BENTOML_HOME=str(scratch / "bentoml"),
        TAGSERVE_HOME=str(scratch / "tagserve"),
        BENTOML_DO_NOT_TRACK="true",
        WANDB_MODE="disabled",
        PYTHONPATH=str(PROJECT_ROOT),
        **GIT_IDENTITY,
    )
    return env


def run(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> str:
    """Run ``cmd``; its output is appended to ``log`` and returned. Fails with the tail."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise BuildError(f"{' '.join(cmd[:4])} failed: {' | '.join(tail)}")
    return done.stdout


def scratch_repo(path: Path, name: str) -> Path:
    """A git repository holding a copy of the project's service, its bento named ``name``."""
    path.mkdir(parents=True)
    for file in SERVICE_FILES:
        shutil.copy(PROJECT_ROOT / file, path / file)
    for package in SERVICE_PACKAGES:
        shutil.copytree(
            PROJECT_ROOT / package, path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    bentofile = yaml.safe_load((path / "bentofile.yaml").read_text())
    bentofile["name"] = name
    (path / "bentofile.yaml").write_text(yaml.safe_dump(bentofile, sort_keys=False))
    git(path, "init", "-q", "-b", "main")
    return path


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), *args],
        env={**os.environ, **GIT_IDENTITY},
        capture_output=True,
        check=True,
        timeout=60,
    )


def commit_and_tag(repo: Path, tag: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", f"rehearsal {tag}")
    git(repo, "tag", "-a", tag, "-m", tag)


def train_and_import(
    env: dict[str, str], log: Path, overrides: list[str], project: str, name: str
) -> str:
    """Train with the pipeline (``overrides``), import its prod model as ``name``: the tag."""
    run([PYTHON, "-m", "pipeline", "tracking=disabled", *overrides], env, PROJECT_ROOT, log)
    out = run(
        [PYTHON, "-m", "importers", "--project", project, "--name", name, "--json"],
        env,
        PROJECT_ROOT,
        log,
    )
    return str(json.loads(out)["tag"])


def release(env: dict[str, str], log: Path, repo: Path, model: str, tag: str) -> str:
    """``python -m release build`` of ``model`` at the release tag ``tag``: the bento tag."""
    commit_and_tag(repo, tag)
    run(
        [PYTHON, "-m", "release", "-C", str(repo), "build", "--model", model, "--allow-non-prod"],
        env,
        repo,
        log,
    )
    name = yaml.safe_load((repo / "bentofile.yaml").read_text())["name"]
    return f"{name}:{tag}"


def build_bentos(scratch: Path, quick: bool, log: Path) -> Bentos:
    """Train, import and build the three bentos into ``scratch``'s BentoML home."""
    env = environment(scratch)
    small = ["model.estimator.n_estimators=10"] if quick else []
    diamonds_repo = scratch_repo(scratch / "repo-diamonds", "tagserve-diamonds")
    models, diamonds = {}, []
    for seed, tag in zip(DIAMONDS_SEEDS, DIAMONDS_TAGS, strict=True):
        model = train_and_import(
            env, log, [f"main.seed={seed}", *small], "tagserve-diamonds", "tagserve-diamonds"
        )
        bento = release(env, log, diamonds_repo, model, tag)
        models[model] = bento
        diamonds.append(bento)
    if len(models) != 2:
        raise BuildError("the retrained diamonds model has the first one's tag")
    penguins_repo = scratch_repo(scratch / "repo-penguins", "tagserve-penguins")
    model = train_and_import(
        env, log, ["experiment=penguins", *small], "tagserve-penguins", "tagserve-penguins"
    )
    penguins = release(env, log, penguins_repo, model, PENGUINS_TAG)
    models[model] = penguins
    return Bentos(scratch / "bentoml", (diamonds[0], diamonds[1]), penguins, models)
