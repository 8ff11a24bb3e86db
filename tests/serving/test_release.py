"""The release CLI in temporary git repositories (a copy of service.py and bentofile.yaml):
tagged, untagged, dirty, non-semver, already built; development builds; `bentoml build` by
hand; and a released bento served from the store, still serving its own model after a newer
one is imported."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from packaging.requirements import Requirement

from release.cli import main
from release.versions import dev_version, is_release_tag, next_version, parse_release_tag
from tests.helpers.release_repos import GIT_IDENTITY, bento_dir, git, make_repo, run_release
from tests.helpers.service_models import (
    BENTOML_CLI,
    PROJECT_ROOT,
    PYTHON,
    REGRESSOR_NAME,
    Models,
    bentoml_home,
    bentoml_server,
    free_port,
    import_prod,
    records,
    subprocess_env,
    train_and_log,
)


@pytest.fixture(autouse=True)
def git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)


def bento_info(home: Models, tag: str) -> dict[str, Any]:
    name, version = tag.split(":")
    return yaml.safe_load(
        (home.bentoml_home / "bentos" / name / version / "bento.yaml").read_text()
    )


# --- versions ------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["1.2.3", "v1.2.3", "v0.0.1", "v10.20.30", "v1.0.0-rc.1"])
def test_release_tags(tag: str) -> None:
    assert is_release_tag(tag)


@pytest.mark.parametrize(
    "tag", ["1.2", "v1.2.3.4", "V1.2.3", "01.2.3", "v1.2.3+build5", "release-1", "latest", "v1.2.x"]
)
def test_not_release_tags(tag: str) -> None:
    assert not is_release_tag(tag)


def test_next_version() -> None:
    tags = ["v0.9.0", "v1.2.3", "v1.10.0", "v2.0.0-rc.1", "nightly"]
    assert next_version(tags, "patch") == "v1.10.1"
    assert next_version(tags, "minor") == "v1.11.0"
    assert next_version(tags, "major") == "v2.0.0"
    assert next_version(["1.0.0"], "minor") == "1.1.0"  # the prefix follows the last release
    assert next_version([], "patch") == "v0.0.1"
    assert parse_release_tag("v2.0.0-rc.1").pre == "rc.1"


def test_dev_versions_never_pass_for_a_release() -> None:
    assert dev_version("0123456789abcdef" * 2, False) == "dev-0123456789ab"
    assert dev_version("0123456789abcdef" * 2, True) == "dev-0123456789ab-dirty"
    assert dev_version(None, False) == "dev-nogit"
    assert not any(is_release_tag(dev_version(c, d)) for c in ("1" * 40, None) for d in (0, 1))


# --- refusals, before anything is built -------------------------------------------------------


def refuse(repo: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["-C", str(repo), *args]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_untagged_head_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path / "repo")
    assert "no tag at HEAD" in refuse(repo, capsys, "build")


@pytest.mark.parametrize("tag", ["release-1", "1.2", "V1.2.3", "v1.2.3.4"])
def test_non_semver_tag_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tag: str
) -> None:
    repo = make_repo(tmp_path / "repo", tag=tag)
    err = refuse(repo, capsys, "build")
    assert f"({tag}) is not a release tag" in err and "X.Y.Z or vX.Y.Z" in err


def test_two_release_tags_at_head_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "repo", tag="v1.0.0")
    git(repo, "tag", "v1.0.1")
    assert "several release tags at HEAD (v1.0.0, v1.0.1)" in refuse(repo, capsys, "build")


@pytest.mark.parametrize("change", ["modified", "untracked", "staged"])
def test_dirty_tree_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str
) -> None:
    repo = make_repo(tmp_path / "repo", tag="v1.0.0")
    if change == "modified":
        (repo / "service.py").write_text((repo / "service.py").read_text() + "\n# edited\n")
    elif change == "untracked":
        (repo / "notes.txt").write_text("not committed")
    else:
        (repo / "new.py").write_text("x = 1\n")
        git(repo, "add", "new.py")
    (repo / "__pycache__").mkdir()  # ignored files do not count
    (repo / "__pycache__" / "service.cpython-311.pyc").write_bytes(b"")
    err = refuse(repo, capsys, "build")
    assert "uncommitted changes" in err and "v1.0.0" in err


def test_not_a_git_repository_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "not in a git work tree" in refuse(tmp_path, capsys, "build")


# --- cutting tags --------------------------------------------------------------------------


def test_cut_tags_the_next_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path / "repo", tag="v1.2.3")
    (repo / "CHANGES").write_text("more\n")
    git(repo, "add", "CHANGES")
    git(repo, "commit", "-q", "-m", "more")
    assert main(["-C", str(repo), "cut", "minor", "--dry-run"]) == 0
    assert capsys.readouterr().out == "v1.3.0\n"
    assert git(repo, "tag", "--points-at", "HEAD") == ""
    assert main(["-C", str(repo), "cut", "minor"]) == 0
    assert "tagged v1.3.0" in capsys.readouterr().out
    assert git(repo, "tag", "--points-at", "HEAD") == "v1.3.0"
    assert git(repo, "cat-file", "-t", "v1.3.0") == "tag"  # annotated
    assert "already tagged v1.3.0" in refuse(repo, capsys, "cut", "patch")
    git(repo, "commit", "-q", "--allow-empty", "-m", "next")
    (repo / "service.py").write_text("edited\n")
    assert "uncommitted changes" in refuse(repo, capsys, "cut", "patch")


# --- real builds -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def released(home: Models, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``python -m release build`` in a repository tagged v1.2.3."""
    repo = make_repo(tmp_path_factory.mktemp("released") / "repo", tag="v1.2.3")
    done = run_release(repo, home, "build")
    assert done.returncode == 0, done.stderr
    return {"repo": repo, "commit": git(repo, "rev-parse", "HEAD"), "out": done.stdout}


def test_release_build_versions_the_bento_by_the_tag(
    home: Models, released: dict[str, Any]
) -> None:
    lines = released["out"].splitlines()
    assert lines[0].startswith(f"built tagserve:v1.2.3 (commit {released['commit'][:12]}")
    assert "bentoml serve tagserve:v1.2.3" in lines[1]
    info = bento_info(home, "tagserve:v1.2.3")
    assert info["version"] == "v1.2.3"
    assert (
        info["labels"]
        | {
            "git_commit": released["commit"],
            "git_tag": "v1.2.3",
            "model_tag": home.regressor,
            "artifact": "tagserve-diamonds/model_export:v0",
        }
        == info["labels"]
    )
    assert info["args"] == {
        "model": home.regressor,
        "git_commit": released["commit"],
        "git_tag": "v1.2.3",
    }
    assert [m["tag"] for m in info["models"]] == [home.regressor]  # exact, not latest
    # lean: the service, the two packages it imports (and the build config BentoML writes);
    # no pipeline, tests, data or caches
    src = bento_dir(home, "tagserve:v1.2.3") / "src"
    shipped = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    top = sorted({name.split("/")[0] for name in shipped})
    assert top == ["bentofile.yaml", "inference", "service.py", "serving"]
    assert not [name for name in shipped if "__pycache__" in name or name.endswith(".pyc")]
    assert "inference/contract.py" in shipped and "serving/http.py" in shipped


def locked_serve_pins() -> list[str]:
    """uv.lock's `serve` group, exported by the uv installed in the project's environment."""
    done = subprocess.run(
        [PYTHON, "-m", "uv", "export", "--frozen", "--offline", "--only-group", "serve"]
        + ["--no-emit-project", "--no-hashes", "--no-header", "--no-annotate", "--quiet"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def test_release_installs_exactly_the_locked_serve_group(
    home: Models, released: dict[str, Any]
) -> None:
    """The bento's packages are uv.lock's pins (plus BentoML's own bentoml line), not a
    resolution at build time; the model's pinned requirements are among them."""
    from importers import model_requirements

    locked = locked_serve_pins()
    assert "bentoml==1.4.39" in locked and "uv==" not in " ".join(locked)  # lean: no tools
    assert not any(line.startswith(("wandb==", "hydra-core==", "pytest==")) for line in locked)
    with bentoml_home(home.bentoml_home):
        pinned = model_requirements(home.regressor)
    assert set(pinned) <= set(locked)
    python = bento_dir(home, "tagserve:v1.2.3") / "env/python"
    installed = (python / "requirements.txt").read_text().splitlines()
    # BentoML rewrites the lines (markers quoted its way): compared as requirements.
    assert [str(Requirement(line)) for line in installed if line.strip()] == [
        str(Requirement(line)) for line in [*locked, "bentoml==1.4.39"]
    ]
    assert not (python / "requirements.lock.txt").exists()


def test_release_refuses_a_model_that_disagrees_with_the_lock(home: Models, tmp_path: Path) -> None:
    """A lock whose scikit-learn is not the model's: refused in one line, nothing built."""
    from importers import model_requirements

    with bentoml_home(home.bentoml_home):
        sklearn = next(r for r in model_requirements(home.regressor) if r.startswith("scikit"))
    repo = make_repo(tmp_path / "repo")
    lock = (repo / "uv.lock").read_text()
    version = sklearn.split("==")[1]
    old = f'name = "scikit-learn"\nversion = "{version}"'
    assert old in lock
    lock = lock.replace(old, 'name = "scikit-learn"\nversion = "1.6.1"')
    (repo / "uv.lock").write_text(lock.replace(f"scikit_learn-{version}", "scikit_learn-1.6.1"))
    git(repo, "commit", "-q", "-am", "another scikit-learn")
    git(repo, "tag", "-a", "v9.9.9", "-m", "v9.9.9")
    done = run_release(repo, home, "build")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: model ") and done.stderr.count("\n") == 1, done.stderr
    assert f"{sklearn} (lock: 1.6.1)" in done.stderr
    assert not bento_dir(home, "tagserve:v9.9.9").exists()


@pytest.mark.parametrize(
    "line",
    [
        "-e git+https://example.invalid/pkg.git#egg=pkg",
        "--extra-index-url https://user:pw@example.invalid/simple",
        "--index-url=https://example.invalid/simple",
        "-r other.txt",
        "scikit-learn @ https://example.invalid/scikit_learn-1.7.2.whl",
        "https://example.invalid/numpy-2.4.6.whl",
        "scikit-learn>=1.0",
        "scikit-learn",
        "scikit-learn==1.7.2 --hash=sha256:" + "0" * 64,
        'numpy==2.4.6 ; platform_release == "https://example.invalid/x"',
    ],
)
def test_only_name_equals_version_lines_are_accepted(line: str) -> None:
    """A requirement that is not `name==version` (an option, a URL, a range, a marker hiding a
    URL) could make the bento install from elsewhere: refused, naming the line."""
    from release.build import check_model_agrees
    from release.errors import ReleaseError

    locked = [
        "scikit-learn==1.7.2",
        "numpy==2.4.6",
        "pkg==1.0",
        'colorama==0.4.6 ; sys_platform == "win32"',
    ]
    check_model_agrees("m:v0", ["scikit-learn==1.7.2", "numpy==2.4.6"], locked)
    with pytest.raises(ReleaseError) as refused:
        check_model_agrees("m:v0", ["numpy==2.4.6", line], locked)
    assert repr(line) in str(refused.value) and "name==version" in str(refused.value)
    with pytest.raises(ReleaseError) as refused:
        check_model_agrees("m:v0", ["numpy==2.4.6"], [*locked, line])
    assert repr(line) in str(refused.value) and "uv.lock" in str(refused.value)


def test_release_refuses_a_model_requirement_with_a_url(
    home: Models, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model whose requirements.txt holds an index URL: `release build` ends with one
    `error:` line naming the line, and nothing is built."""
    from importers import import_model
    from tests.helpers.importer_models import writable_copy

    folder = writable_copy(home.mlflow_folder(home.regressor), tmp_path / "model")
    bad = "--extra-index-url https://example.invalid/simple"
    with (folder / "requirements.txt").open("a") as requirements:
        requirements.write(f"\n{bad}\n")
    with bentoml_home(home.bentoml_home):
        tag = import_model(f"dir:{folder}", name="tagserve-urls").tag
    repo = make_repo(tmp_path / "repo", tag="v7.7.7")
    done = run_release(repo, home, "build", "--model", tag)
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert done.stderr.startswith("error: model ") and done.stderr.count("\n") == 1, done.stderr
    assert repr(bad) in done.stderr
    assert not bento_dir(home, "tagserve:v7.7.7").exists()


def test_bentofile_packages_match_the_model_requirements(home: Models) -> None:
    """bentofile.yaml's static list must not drift from what models are trained with."""
    from importers import model_requirements
    from pipeline.train import pinned_requirements

    packages = yaml.safe_load((PROJECT_ROOT / "bentofile.yaml").read_text())["python"]["packages"]
    with bentoml_home(home.bentoml_home):
        assert packages == model_requirements(home.regressor)
    assert packages == pinned_requirements()


def test_already_built_version_is_refused(home: Models, released: dict[str, Any]) -> None:
    done = run_release(released["repo"], home, "build")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("error: bento tagserve:v1.2.3 is already in the store")
    assert done.stderr.count("\n") == 1


def test_dev_build_on_a_tagged_built_head_reuses_the_release(
    home: Models, released: dict[str, Any]
) -> None:
    done = run_release(released["repo"], home, "dev")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("already built tagserve:v1.2.3")


def test_dev_build_without_a_release_tag(home: Models, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", tag="nightly")
    commit = git(repo, "rev-parse", "HEAD")
    done = run_release(repo, home, "dev")
    assert done.returncode == 0, done.stderr
    tag = f"tagserve:dev-{commit[:12]}"
    assert done.stdout.startswith(f"built {tag} (development build: no release tag at HEAD")
    assert f"bentoml serve {tag}" in done.stdout and "curl -s -X POST" in done.stdout
    info = bento_info(home, tag)
    assert info["labels"]["git_tag"] == "" and info["labels"]["dirty"] == "false"
    assert info["args"]["model"] == home.regressor
    assert not is_release_tag(info["version"])


def test_bentoml_build_by_hand_keeps_working(home: Models, released: dict[str, Any]) -> None:
    """`bentoml build` without the CLI: the service records the model it resolved and the
    commit, so the bento is pinned all the same."""
    done = subprocess.run(
        [BENTOML_CLI, "build", "--version", "handmade"],
        cwd=released["repo"],
        env=subprocess_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    info = bento_info(home, "tagserve:handmade")
    assert info["args"]["model"] == home.regressor
    assert info["args"]["git_commit"] == released["commit"]
    assert info["labels"]["model_tag"] == home.regressor
    assert home.regressor in [m["tag"] for m in info["models"]]


# --- a released bento, served from the store -------------------------------------------------


@pytest.fixture(scope="module")
def newer_model(home: Models) -> Iterator[str]:
    """A newer prod model imported after the release: `latest` moves to it."""
    train_and_log(home.tagserve_home, "tagserve-release-newer", classifier=False, seed=7)
    with bentoml_home(home.bentoml_home):
        tag = import_prod("tagserve-release-newer", home=home.tagserve_home, name=REGRESSOR_NAME)
    assert tag != home.regressor
    yield tag


def test_released_bento_serves_its_own_model_from_the_store(
    home: Models, released: dict[str, Any], newer_model: str, tmp_path: Path
) -> None:
    env = subprocess_env(home)  # no TAGSERVE_MODEL: the bento decides
    with bentoml_server(
        "tagserve:v1.2.3", env=env, cwd=tmp_path, log=tmp_path / "serve.log"
    ) as url:
        meta = httpx.get(f"{url}/metadata").json()
        example = home.example(home.regressor)
        predict = httpx.post(f"{url}/predict", json=records(example)[0])
        invocations = httpx.post(f"{url}/invocations", json=example)
    assert meta["model"] == home.regressor != newer_model
    assert meta["bento"] == "tagserve:v1.2.3"
    assert meta["git_tag"] == "v1.2.3" and meta["git_commit"] == released["commit"]
    from inference.loading import load_pipeline

    split = example["dataframe_split"]
    frame = pd.DataFrame(split["data"], columns=split["columns"])
    expected = load_pipeline(home.mlflow_folder(home.regressor)).predict(frame)
    assert predict.json() == {"prediction": expected[0]}
    assert invocations.json() == {"predictions": expected.tolist()}


# --- the prod model, after a rollback ---------------------------------------------------------


@pytest.fixture(scope="module")
def rolled_back(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Import v0 and v1 as prod, roll the artifact store's prod back to v0 and import again
    ("already imported"): v1 is the newest import, v0 the prod model."""
    from artifacts.store import LocalArtifactStore

    root = tmp_path_factory.mktemp("rollback")
    tagserve_home, home = root / "tagserve", root / "bentoml"
    tags = []
    with bentoml_home(home):
        for seed in (0, 3):
            train_and_log(tagserve_home, REGRESSOR_NAME, classifier=False, seed=seed)
            tags.append(import_prod(REGRESSOR_NAME, home=tagserve_home, name=REGRESSOR_NAME))
        store = LocalArtifactStore(tagserve_home / "store" / REGRESSOR_NAME)
        store.set_alias("model_export:v0", "prod")
        assert import_prod(REGRESSOR_NAME, home=tagserve_home, name=REGRESSOR_NAME) == tags[0]
    return {"models": Models(home, tagserve_home, tags[0], ""), "prod": tags[0], "newer": tags[1]}


def test_release_model_is_the_prod_model_not_the_newest(rolled_back: dict[str, Any]) -> None:
    home, prod, newer = rolled_back["models"], rolled_back["prod"], rolled_back["newer"]

    def release_model(*args: str, **env: str) -> subprocess.CompletedProcess:
        return run_release(PROJECT_ROOT, home, "model", *args, **env)

    assert release_model().stdout == f"{prod}\n"
    assert release_model(f"{REGRESSOR_NAME}:latest").stdout == f"{prod}\n"
    refused = release_model(TAGSERVE_MODEL=newer)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith(f"error: model {newer} is not the prod model")
    assert refused.stderr.count("\n") == 1 and "--allow-non-prod" in refused.stderr
    assert release_model(newer, "--allow-non-prod").stdout == f"{newer}\n"


def test_release_ships_the_prod_model_after_a_rollback(
    rolled_back: dict[str, Any], tmp_path: Path
) -> None:
    home, prod, newer = rolled_back["models"], rolled_back["prod"], rolled_back["newer"]
    repo = make_repo(tmp_path / "repo", tag="v3.0.0")
    refused = run_release(repo, home, "build", "--model", newer)
    assert refused.returncode == 1 and "is not the prod model" in refused.stderr, refused.stderr
    done = run_release(repo, home, "build")
    assert done.returncode == 0, done.stderr
    info = bento_info(home, "tagserve:v3.0.0")
    assert info["args"]["model"] == info["labels"]["model_tag"] == prod != newer


def test_make_serve_serves_the_prod_model_after_a_rollback(
    rolled_back: dict[str, Any], tmp_path: Path
) -> None:
    """`make serve` (the real target, a real server on 127.0.0.1): the rolled-back prod model,
    not the newest import."""
    from benchmarks.servers import start_process

    home, prod = rolled_back["models"], rolled_back["prod"]
    port = free_port()
    server = start_process(
        ["make", "--no-print-directory", "serve", "HOST=127.0.0.1", f"PORT={port}"],
        url=f"http://127.0.0.1:{port}",
        ready_path="/readyz",
        env=subprocess_env(home),
        cwd=PROJECT_ROOT,
        log=tmp_path / "serve.log",
    )
    try:
        meta = httpx.get(f"{server.url}/metadata").json()
    finally:
        server.stop()
    assert meta["model"] == prod != rolled_back["newer"]
    assert f"serving {prod}" in (tmp_path / "serve.log").read_text()
