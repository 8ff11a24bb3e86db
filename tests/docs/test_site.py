"""The docs site builds strictly (what `make docs` runs), and the strict build fails for the
reasons it is strict about: a broken link, a missing anchor, a page left out of the
navigation."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.docs import DOCS
from tests.helpers.project import PROJECT_ROOT, VENV_BIN

MKDOCS = str(VENV_BIN / "mkdocs")
ISSUE = re.compile(r"issues? #?[0-9]+", re.I)


def build(site: Path, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` from the project root (the snippets' paths are relative to
    it) into ``site``."""
    command = [MKDOCS, "build", "--strict", "--site-dir", str(site)]
    if config is not None:
        command += ["--config-file", str(config)]
    return subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_site_builds_strictly_with_every_page(tmp_path: Path):
    done = build(tmp_path / "site")
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr
    pages = {p.stem for p in DOCS.glob("*.md")}
    built = {p.parent.name for p in (tmp_path / "site").glob("*/index.html")}
    assert pages - {"index"} <= built
    # The benchmark results are included from benchmarks/results/, not copied.
    benchmarks = (tmp_path / "site" / "benchmarks" / "index.html").read_text()
    first_line = (PROJECT_ROOT / "benchmarks/results/latest.md").read_text().splitlines()[0]
    assert first_line.split(";")[0].split("`")[1] in benchmarks  # the model tag of the run
    assert "--8&lt;--" not in benchmarks and "--8<--" not in benchmarks


BROKEN = {
    "a link to a missing page": ("index.md", "[gone](no-such-page.md)", "no-such-page.md"),
    "a missing anchor": ("index.md", "[gone](serving.md#no-such-anchor)", "#no-such-anchor"),
    "a page missing from the navigation": ("orphan.md", "# Orphan", "orphan.md"),
    "a snippet of a missing file": ("index.md", '--8<-- "benchmarks/results/gone.md"', "gone.md"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_the_strict_build_fails_on(case: str, tmp_path: Path):
    """The project's own config (INHERIT), on a copy of the pages with one fault added."""
    page, text, named = BROKEN[case]
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    with (docs / page).open("a") as out:
        out.write(f"\n\n{text}\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"INHERIT: {PROJECT_ROOT / 'mkdocs.yml'}\ndocs_dir: {docs}\n")
    done = build(tmp_path / "site", config)
    assert done.returncode != 0, f"{case} built: {done.stderr}"
    assert named in done.stderr


def test_the_readme_links_to_files_that_exist():
    readme = (PROJECT_ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if "://" not in t]
    assert "docs/serving.md" in local  # the parse works
    missing = [t for t in local if not (PROJECT_ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_the_docs_name_no_issue_numbers():
    """The docs tell what the project does and why, never which ticket asked for it."""
    pages = [PROJECT_ROOT / "README.md", PROJECT_ROOT / "benchmarks" / "README.md"]
    pages += sorted(DOCS.rglob("*.md"))
    found = [
        f"{page.relative_to(PROJECT_ROOT)}: {match.group(0)}"
        for page in pages
        for match in ISSUE.finditer(page.read_text())
    ]
    assert not found, found
