"""Rules of the whole project that no linter checks: short functions, and comments that give
reasons rather than tracker references.

The project's files are found by walking its folder with the ``.gitignore`` patterns applied
(not with git), so that the checks also run on a copy that is not a clone.
"""

from __future__ import annotations

import ast
import os
import re
from fnmatch import fnmatch
from pathlib import Path

from tests.helpers.project import PROJECT_ROOT

MAX_FUNCTION_LINES = 80
# A reference to a tracker entry: "issue" or "issues", then a number (a "#" before it or not).
TRACKER_REFERENCE = re.compile(r"issues? #?[0-9]+", re.IGNORECASE)
# The lock file quotes the release notes of packages; none of it is the project's text.
NOT_THE_PROJECTS_TEXT = {"uv.lock"}


def ignore_patterns() -> list[str]:
    lines = (PROJECT_ROOT / ".gitignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: Path, patterns: list[str]) -> bool:
    """Whether a ``.gitignore`` pattern matches ``relative`` (the subset of the syntax the
    project's file uses: names, globs of names, and paths anchored at the root)."""
    for pattern in patterns:
        pattern = pattern.strip("/")
        if "/" in pattern:
            path = relative.as_posix()
            if path == pattern or path.startswith(f"{pattern}/"):
                return True
        elif any(fnmatch(part, pattern) for part in relative.parts):
            return True
    return False


def project_files() -> list[Path]:
    """Every file of the project (what a clone holds, plus files not yet committed)."""
    patterns = ignore_patterns()
    found = []
    for folder, subfolders, names in os.walk(PROJECT_ROOT):
        here = Path(folder).relative_to(PROJECT_ROOT)
        subfolders[:] = sorted(
            d for d in subfolders if d != ".git" and not ignored(here / d, patterns)
        )
        found += [PROJECT_ROOT / here / n for n in names if not ignored(here / n, patterns)]
    return sorted(found)


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:  # data and images
        return None


def test_the_walk_finds_the_projects_files_and_skips_ignored_ones() -> None:
    """The other checks are only as good as the file list they read."""
    relative = {p.relative_to(PROJECT_ROOT).as_posix() for p in project_files()}
    assert {"README.md", "Makefile", ".ci/run", "service.py", "tests/test_layout.py"} <= relative
    assert not {p for p in relative if p.startswith((".venv/", ".git/", ".tools/"))}
    assert not {p for p in relative if "__pycache__" in p}


def test_no_function_outside_the_tests_is_over_80_lines() -> None:
    long = []
    for path in project_files():
        relative = path.relative_to(PROJECT_ROOT)
        if path.suffix != ".py" or relative.parts[0] == "tests":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{relative}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 80 lines (split them): " + ", ".join(long)


def test_no_file_names_a_tracker_issue() -> None:
    """Code, tests and docs say why, not which issue: a reader has no tracker at hand."""
    found = []
    for path in project_files():
        if path.name in NOT_THE_PROJECTS_TEXT or (text := text_of(path)) is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if match := TRACKER_REFERENCE.search(line):
                found.append(f"{path.relative_to(PROJECT_ROOT)}:{number}: {match.group()!r}")
    assert not found, "issue numbers in the project's files: " + "; ".join(found)
