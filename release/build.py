"""Build the bento: a release (version = the git release tag at HEAD) or a development build.

Both read ``bentofile.yaml`` and then pin what a release must not leave open:

- ``models``: the exact model tag (``tagserve-diamonds:v3-1a2b3c4d5e6f``, not ``latest``),
  chosen by ``--model``, else ``TAGSERVE_MODEL``, else the bentofile's first model, where
  ``name:latest`` means the model the importer labelled ``stage=prod`` (a non-prod model
  only with ``--allow-non-prod``);
- ``python.packages``: the bento's packages, exported from the project's committed
  ``uv.lock`` (``uv export --frozen`` of the ``serve`` dependency group, with the uv installed
  in this environment), never re-resolved against the registry (``lock_packages: false``); the
  model's own pinned requirements (``importers.model_requirements``) must agree with it;
- bento arguments ``model``, ``git_commit``, ``git_tag``: what ``service.py`` serves and
  reports in ``/metadata``, whatever the environment of the server;
- with ``--candidate TAG``: a second model (an exact tag, checked as the service checks it:
  ``serving.candidates.check_candidate``) in ``models`` and the bento argument ``candidate``,
  so the bento's service loads it beside the live one (shadow and canary shares are set where
  it is served: ``TAGSERVE_SHADOW_FRACTION``, ``TAGSERVE_CANARY_PERCENT``);
- labels ``git_commit``, ``git_tag``, ``model_tag``, ``artifact``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.bento import get_model, serving_model
from inference.constants import DEFAULT_MODEL, MLFLOW_FOLDER, MODEL_ENV, SERVING_EXAMPLE
from inference.errors import TagserveError
from release import git
from release.errors import ReleaseError
from release.versions import dev_version

BENTOFILE = "bentofile.yaml"
LOCKFILE = "uv.lock"
# The dependency group of pyproject.toml that holds what the service needs at serving time.
SERVE_GROUP = "serve"
# The keys of bentofile.yaml that bentoml.bentos.build takes as arguments.
BUILD_KEYS = (
    "service",
    "name",
    "description",
    "labels",
    "include",
    "exclude",
    "envs",
    "docker",
    "python",
    "conda",
    "models",
    "args",
)


def bentoml_command() -> str:
    """How to run this environment's ``bentoml`` from the current folder: a new user's shell
    has no ``.venv/bin`` on PATH, so a bare ``bentoml`` would not be found."""
    beside = Path(sys.executable).parent / "bentoml"
    try:
        return str(beside.relative_to(Path.cwd()))
    except ValueError:
        return str(beside)


@dataclass(frozen=True)
class BuildResult:
    """A built (or found) bento."""

    tag: str
    model_tag: str
    artifact: str
    git_commit: str
    git_tag: str
    created: bool = True
    dev: str = ""  # why this is a development build ("": a release)
    example: dict[str, Any] = field(default_factory=dict)
    candidate: str = ""  # the candidate model beside the live one ("": none)

    def lines(self) -> list[str]:
        what = "built" if self.created else "already built"
        kind = f"development build: {self.dev}; " if self.dev else ""
        commit = self.git_commit[:12] or "no git"
        lines = [
            f"{what} {self.tag} ({kind}commit {commit}, model {self.model_tag}"
            + (f" from {self.artifact}" if self.artifact else "")
            + (f", candidate {self.candidate})" if self.candidate else ")"),
            f"serve it:  {bentoml_command()} serve {self.tag} --port 3000",
        ]
        if self.example:
            body = json.dumps(self.example, separators=(",", ":"))
            lines.append(
                "call it:   curl -s -X POST http://127.0.0.1:3000/predict "
                f"-H 'content-type: application/json' -d '{body}'"
            )
        return lines


def read_bentofile(root: Path, name: str = BENTOFILE) -> dict[str, Any]:
    import yaml

    path = root / name
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ReleaseError(f"no {name} in {root}") from None
    except yaml.YAMLError as exc:
        raise ReleaseError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(config, dict) or not config.get("service"):
        raise ReleaseError(f"{path} names no service")
    unknown = sorted(set(config) - set(BUILD_KEYS))
    if unknown:
        raise ReleaseError(f"{path}: unsupported key(s) {', '.join(unknown)}")
    return config


def bento_name(config: dict[str, Any]) -> str:
    if config.get("name"):
        return str(config["name"])
    # BentoML names a bento after its service; this project's is "tagserve".
    return "tagserve"


def wanted_model(config: dict[str, Any], model: str | None = None) -> str:
    """The model asked for: ``--model``, else ``TAGSERVE_MODEL``, else the bentofile's first
    (``name:latest``, which :func:`resolve_model` reads as the prod model of ``name``)."""
    if model:
        return model
    if os.environ.get(MODEL_ENV):
        return os.environ[MODEL_ENV]
    for spec in config.get("models") or []:
        return str(spec["tag"] if isinstance(spec, dict) else spec)
    return DEFAULT_MODEL


def resolve_model(tag: str, *, allow_non_prod: bool = False) -> Any:
    """The ``bentoml.Model`` to ship for ``tag``: ``name``/``name:latest`` is the model
    labelled ``stage=prod`` (not merely the newest import); an exact tag must be that model
    unless ``allow_non_prod``."""
    try:
        return serving_model(tag, allow_non_prod=allow_non_prod)
    except TagserveError as exc:
        raise ReleaseError(f"{exc}; or pick one with --model / {MODEL_ENV}") from None


def built_model(tag: str) -> Any:
    """The model an existing bento was built with (exact, whatever its stage now)."""
    try:
        return get_model(tag)
    except TagserveError as exc:
        raise ReleaseError(str(exc)) from None


def resolve_candidate(tag: str | None, live: Any) -> Any | None:
    """The candidate model to ship beside ``live`` (None without ``tag``), checked as the
    service checks it at start-up (exact tag, trust rules, same task and input contract)."""
    if not tag:
        return None
    from serving.candidates import check_candidate
    from serving.loading import model_contract

    try:
        return check_candidate(tag, str(live.tag), model_contract(live), model_contract)
    except TagserveError as exc:
        raise ReleaseError(str(exc).replace("TAGSERVE_CANDIDATE=", "--candidate ")) from None


def requirements_of(model: Any) -> list[str]:
    """The model's pinned requirements, as the importer reads them."""
    from importers import model_requirements as importer_requirements

    requirements = importer_requirements(model)
    if not requirements:
        raise ReleaseError(f"model {model.tag} records no Python requirements")
    return requirements


def locked_requirements(root: Path, group: str = SERVE_GROUP) -> list[str]:
    """The pinned lines (``name==version[ ; marker]``) of ``group`` and everything it needs, as
    the committed ``uv.lock`` at ``root`` has them: ``uv export --frozen --offline``, run by the
    uv installed in this environment (a locked dependency), not one from PATH."""
    for name in (LOCKFILE, "pyproject.toml"):
        if not (root / name).is_file():
            raise ReleaseError(
                f"no {name} in {root}: the bento's packages are exported from the project's lock"
            )
    command = [sys.executable, "-m", "uv", "export", "--frozen", "--offline", "--quiet"]
    command += ["--only-group", group, "--no-emit-project", "--no-hashes", "--no-header"]
    command += ["--no-annotate"]
    try:
        done = subprocess.run(
            command, cwd=root, capture_output=True, text=True, timeout=120, check=False
        )
    except OSError as exc:
        raise ReleaseError(f"could not run uv export: {exc}") from None
    if done.returncode != 0:
        why = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        if "No module named uv" in why:
            why = f"uv is not installed in {sys.prefix} (it is a locked dependency: `make install`)"
        raise ReleaseError(f"uv export of the {group!r} group of {LOCKFILE} failed: {why}")
    lines = [line.strip() for line in done.stdout.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise ReleaseError(f"{LOCKFILE} has no dependency group {group!r} (pyproject.toml)")
    return lines


def pinned_requirement(line: str) -> Any | None:
    """``line`` as a ``packaging`` Requirement if it is exactly ``name[extras]==version``,
    optionally with an environment marker; else None.

    Anything else could make the bento install from somewhere other than the package index
    it was tested with, or another version: options (``-e``, ``--extra-index-url``, ``-r``,
    ``--hash``), direct URLs (``name @ https://...``, a bare URL), ranges, and a marker
    holding a URL-like string.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    text = line.strip()
    if not text or text.startswith("-"):
        return None
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return None
    specs = list(req.specifier)
    if req.url or len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
        return None
    if req.marker is not None and any(c in str(req.marker) for c in ("://", "@", "/")):
        return None
    return req


def check_model_agrees(model_tag: str, pinned: list[str], locked: list[str]) -> None:
    """Refuse a model whose pinned requirements differ from the lock's (the bento would
    install other versions than the model was trained with), and any line of either that is
    not ``name==version``: only such lines enter a bento.

    Raises:
        ReleaseError: naming the first offending lines.
    """
    from packaging.utils import canonicalize_name

    versions: dict[str, str] = {}
    for line in locked:
        req = pinned_requirement(line)
        if req is None:
            raise ReleaseError(
                f"{LOCKFILE}'s {SERVE_GROUP!r} group exports {line!r}: only name==version "
                f"lines enter a bento (no options, URLs or ranges); fix pyproject.toml and "
                f"`make lock`"
            )
        versions[canonicalize_name(req.name)] = next(iter(req.specifier)).version
    for line in pinned:
        if pinned_requirement(line) is None:
            raise ReleaseError(
                f"model {model_tag} requires {line!r}: only name==version lines enter a "
                f"bento (no options, index or direct URLs, ranges); retrain or re-export the "
                f"model with pinned requirements"
            )
    disagree = []
    for line in pinned:
        req = pinned_requirement(line)
        have = versions.get(canonicalize_name(req.name))
        if have is None:
            disagree.append(f"{line} (not in the lock)")
        elif not req.specifier.contains(have, prereleases=True):
            disagree.append(f"{line} (lock: {have})")
    if disagree:
        raise ReleaseError(
            f"model {model_tag} pins requirements that disagree with {LOCKFILE}'s "
            f"{SERVE_GROUP!r} group: {', '.join(disagree)}; retrain the model with this "
            f"checkout's locked packages, or lock the versions it needs (`make lock`)"
        )


def artifact_of(model: Any) -> str:
    meta = model.info.metadata
    return str(meta.get("artifact_qualified_name") or meta.get("artifact") or "")


def example_record(model: Any) -> dict[str, Any]:
    """The first row of the model's serving input example, as a /predict body."""
    path = Path(model.path_of(MLFLOW_FOLDER)) / SERVING_EXAMPLE
    try:
        split = json.loads(path.read_text())["dataframe_split"]
        return dict(zip(split["columns"], split["data"][0], strict=True))
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return {}


def existing_bento(tag: str) -> Any | None:
    import bentoml

    try:
        return bentoml.bentos.get(tag)
    except bentoml.exceptions.NotFound:
        return None


def _build(
    root: Path,
    config: dict[str, Any],
    version: str,
    model: Any,
    git_commit: str,
    git_tag: str,
    base_image: str | None,
    extra_labels: dict[str, str] | None = None,
    candidate: Any | None = None,
) -> Any:
    import bentoml
    import yaml

    model_tag = str(model.tag)
    docker = dict(config.get("docker") or {})
    base_image = base_image or os.environ.get("TAGSERVE_BASE_IMAGE")
    if base_image:
        docker["base_image"] = base_image
    locked = locked_requirements(root)
    check_model_agrees(model_tag, requirements_of(model), locked)
    candidate_tag = str(candidate.tag) if candidate is not None else ""
    if candidate is not None:
        check_model_agrees(candidate_tag, requirements_of(candidate), locked)
    # Exactly the lock's pins, installed as they are (no resolution at build time).
    python = {**(config.get("python") or {}), "packages": locked, "lock_packages": False}
    python.pop("requirements_txt", None)
    labels = {
        **(config.get("labels") or {}),
        **(extra_labels or {}),
        "git_commit": git_commit,
        "git_tag": git_tag,
        "model_tag": model_tag,
        "artifact": artifact_of(model),
        **({"candidate_tag": candidate_tag} if candidate_tag else {}),
    }
    args = {
        **(config.get("args") or {}),
        "model": model_tag,
        "git_commit": git_commit,
        "git_tag": git_tag,
        **({"candidate": candidate_tag} if candidate_tag else {}),
    }
    config = {
        **config,
        "labels": labels,
        "python": python,
        "models": [model_tag, *([candidate_tag] if candidate_tag else [])],
        "args": args,
    }
    if docker:
        config["docker"] = docker
    # BentoML logs each step at INFO; the CLI prints its own summary.
    logging.getLogger("bentoml").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="tagserve-release-") as tmp:
        # The bentofile with the pins, built exactly as `bentoml build -f` would build it.
        bentofile = Path(tmp) / BENTOFILE
        bentofile.write_text(yaml.safe_dump(config, sort_keys=False))
        try:
            return bentoml.bentos.build_bentofile(
                str(bentofile), version=version, build_ctx=str(root), args=args
            )
        except Exception as exc:  # BentoML raises many kinds; all end the build
            text = " ".join(str(exc).split())
            raise ReleaseError(f"bentoml build failed: {type(exc).__name__}: {text}") from exc


def build_release(
    cwd: Path,
    *,
    model: str | None = None,
    base_image: str | None = None,
    allow_non_prod: bool = False,
    candidate: str | None = None,
) -> BuildResult:
    """Build ``<name>:<tag>`` from the release tag at HEAD of the clean work tree at ``cwd``.

    Raises:
        ReleaseError: no tag at HEAD, a tag that is not semver (or several), a dirty tree,
            a bento of that version already in the store, no such model, a model that is not
            the prod model (unless ``allow_non_prod``), a failed build.
            Each is checked before anything is built.
    """
    root = git.repo_root(cwd)
    head = git.head_state(root)
    tag = _release_tag(head)
    if head.dirty:
        raise ReleaseError(
            f"the work tree has uncommitted changes ({head.describe_changes()}): a release is "
            f"built from the tagged commit {tag} only; commit or stash them"
        )
    config = read_bentofile(root)
    bento_tag = f"{bento_name(config)}:{tag}"
    found = existing_bento(bento_tag)
    if found is not None:
        built = found.info.labels.get("git_commit", "")[:12] or "unknown"
        raise ReleaseError(
            f"bento {bento_tag} is already in the store (commit {built}, built "
            f"{found.info.creation_time:%Y-%m-%d %H:%M}): releases are immutable; cut a new "
            f"tag (`python -m release cut patch`) or delete it (`bentoml delete {bento_tag}`)"
        )
    chosen = resolve_model(wanted_model(config, model), allow_non_prod=allow_non_prod)
    beside = resolve_candidate(candidate, chosen)
    extra = {"dirty": "false", "release": "true"}
    bento = _build(root, config, tag, chosen, head.commit, tag, base_image, extra, beside)
    return _result(bento, chosen, head.commit, tag, created=True, candidate=beside)


def build_dev(
    cwd: Path,
    *,
    model: str | None = None,
    base_image: str | None = None,
    allow_non_prod: bool = False,
    candidate: str | None = None,
) -> BuildResult:
    """What ``make demo`` ends with: the release if HEAD carries a release tag and the tree is
    clean (reused when already built), else a development build ``dev-<commit>[-dirty]``,
    which replaces an earlier development build of the same version."""
    try:
        root = git.repo_root(cwd)
        head: git.HeadState | None = git.head_state(root)
    except ReleaseError:
        root, head = cwd, None
    if head is not None and not head.dirty and len(head.release_tags) == 1:
        tag = head.release_tags[0]
        config = read_bentofile(root)
        found = existing_bento(f"{bento_name(config)}:{tag}")
        if found is None:
            return build_release(
                root,
                model=model,
                base_image=base_image,
                allow_non_prod=allow_non_prod,
                candidate=candidate,
            )
        chosen = built_model(found.info.labels.get("model_tag") or wanted_model(config))
        return _result(found, chosen, head.commit, tag, created=False)
    config = read_bentofile(root)
    version = dev_version(head.commit if head else None, bool(head and head.dirty))
    bento_tag = f"{bento_name(config)}:{version}"
    chosen = resolve_model(wanted_model(config, model), allow_non_prod=allow_non_prod)
    beside = resolve_candidate(candidate, chosen)
    if existing_bento(bento_tag) is not None:
        import bentoml

        bentoml.bentos.delete(bento_tag)
    commit = head.commit if head else ""
    extra = {"dirty": "true" if head and head.dirty else "false", "release": "false"}
    bento = _build(root, config, version, chosen, commit, "", base_image, extra, beside)
    return _result(bento, chosen, commit, "", created=True, dev=_why_dev(head), candidate=beside)


def _why_dev(head: git.HeadState | None) -> str:
    if head is None:
        return "not a git checkout"
    if head.dirty:
        return "uncommitted changes"
    if len(head.release_tags) > 1:
        return "several release tags at HEAD"
    return "no release tag at HEAD"


def _release_tag(head: git.HeadState) -> str:
    if not head.tags:
        raise ReleaseError(
            f"no tag at HEAD ({head.commit[:12]}): tag the release first, e.g. "
            "`python -m release cut patch` or `git tag v1.2.3`"
        )
    releases = head.release_tags
    if not releases:
        shown = ", ".join(head.tags)
        raise ReleaseError(
            f"the tag at HEAD ({shown}) is not a release tag: use semantic versioning, "
            "X.Y.Z or vX.Y.Z (e.g. v1.2.3)"
        )
    if len(releases) > 1:
        raise ReleaseError(
            f"several release tags at HEAD ({', '.join(releases)}): keep one (`git tag -d TAG`)"
        )
    return releases[0]


def _result(
    bento: Any,
    model: Any,
    commit: str,
    tag: str,
    *,
    created: bool,
    dev: str = "",
    candidate: Any | None = None,
) -> BuildResult:
    return BuildResult(
        tag=str(bento.tag),
        model_tag=str(model.tag),
        artifact=artifact_of(model),
        git_commit=commit,
        git_tag=tag,
        created=created,
        dev=dev,
        example=example_record(model),
        candidate=str(candidate.tag) if candidate is not None else "",
    )
