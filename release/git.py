"""The few git questions a release asks, answered by the ``git`` command."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from release.errors import ReleaseError
from release.versions import is_release_tag


def git(repo: Path, *args: str, check: bool = True) -> str:
    """``git -C repo args...``'s stdout (stripped); ReleaseError with git's own message."""
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60
        )
    except FileNotFoundError:
        raise ReleaseError("git is not installed (a release is defined by a git tag)") from None
    if check and done.returncode != 0:
        message = " ".join((done.stderr or done.stdout).split()) or f"exit {done.returncode}"
        raise ReleaseError(f"git {' '.join(args)} failed: {message}")
    return done.stdout.strip()


def repo_root(path: Path) -> Path:
    """The top of the git work tree holding ``path``."""
    if not path.is_dir():
        raise ReleaseError(f"{path} is not a folder")
    try:
        return Path(git(path, "rev-parse", "--show-toplevel"))
    except ReleaseError:
        raise ReleaseError(
            f"{path} is not in a git work tree: a release is built from a tagged commit"
        ) from None


@dataclass(frozen=True)
class HeadState:
    commit: str  # full sha of HEAD
    tags: list[str]  # every tag pointing at HEAD
    changes: list[str]  # `git status --porcelain` lines (untracked files included)

    @property
    def dirty(self) -> bool:
        return bool(self.changes)

    @property
    def release_tags(self) -> list[str]:
        return [t for t in self.tags if is_release_tag(t)]

    def describe_changes(self, most: int = 3) -> str:
        shown = ", ".join(line[3:] for line in self.changes[:most])
        more = f" and {len(self.changes) - most} more" if len(self.changes) > most else ""
        return f"{shown}{more}"


def head_state(repo: Path) -> HeadState:
    try:
        commit = git(repo, "rev-parse", "--verify", "HEAD")
    except ReleaseError:
        raise ReleaseError(f"{repo} has no commit yet: commit and tag a release first") from None
    tags = git(repo, "tag", "--points-at", "HEAD").split()
    # Untracked files count (they could end up in the bento); ignored ones do not (local
    # stores, caches, virtualenvs).
    status = git(repo, "status", "--porcelain", "--untracked-files=all")
    return HeadState(commit=commit, tags=tags, changes=status.splitlines())


def all_tags(repo: Path) -> list[str]:
    return git(repo, "tag", "--list").split()


def create_tag(repo: Path, tag: str, message: str) -> None:
    git(repo, "tag", "-a", tag, "-m", message)
