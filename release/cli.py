"""``python -m release COMMAND``: build, dev, model, models, cut, latest, example-request.

A refusal or failure prints one line, ``error: ...``, on stderr and exits with 1 (2 for bad
usage), never a traceback (set TAGSERVE_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference import strict_json
from inference.cli import OneLineArgumentParser, run_command
from release.errors import ReleaseError


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m release",
        description="Release builds of the tagserve bento: version = the git release tag at "
        "HEAD (X.Y.Z or vX.Y.Z).",
    )
    parser.add_argument(
        "-C",
        "--repo",
        type=Path,
        default=Path.cwd(),
        help="the git work tree to build from (default: the current folder)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)
    add_builds(sub)
    add_models(sub)
    add_tags(sub)
    return parser


def model_options(p: argparse.ArgumentParser) -> None:
    """The options of a build: which model (and candidate) it ships, on which base image."""
    p.add_argument(
        "--model",
        metavar="TAG",
        help="BentoML model to ship (default: $TAGSERVE_MODEL, else bentofile.yaml's); "
        "name or name:latest means the model labelled stage=prod",
    )
    p.add_argument(
        "--allow-non-prod",
        action="store_true",
        help="ship an exact model tag that is not the prod model",
    )
    p.add_argument(
        "--candidate",
        metavar="TAG",
        help="an exact model tag to ship beside the live model, for shadow and canary "
        "(TAGSERVE_SHADOW_FRACTION, TAGSERVE_CANARY_PERCENT where it is served)",
    )
    p.add_argument(
        "--base-image",
        metavar="IMAGE",
        help="container base image (default: $TAGSERVE_BASE_IMAGE, else bentofile.yaml's)",
    )


def add_builds(sub: Any) -> None:
    """``build`` and ``dev``."""
    p = sub.add_parser(
        "build",
        help="build <name>:<tag> from the release tag at HEAD; refuses an untagged or "
        "non-semver HEAD, a dirty tree and an existing bento of that version",
    )
    model_options(p)
    p = sub.add_parser(
        "dev",
        help="make demo's build: the release if HEAD is tagged and clean, else a development "
        "bento dev-<commit>[-dirty]",
    )
    model_options(p)


def add_models(sub: Any) -> None:
    """``model``, ``models`` and ``example-request``: what the store holds."""
    p = sub.add_parser(
        "model",
        help="print the exact tag of the model to serve: the prod model (make serve uses it)",
    )
    p.add_argument(
        "tag",
        nargs="?",
        default=None,
        help="a model tag (default: $TAGSERVE_MODEL, else bentofile.yaml's, i.e. the prod model)",
    )
    p.add_argument(
        "--allow-non-prod", action="store_true", help="accept an exact tag that is not prod"
    )
    p = sub.add_parser(
        "models",
        help="list the store's models: exact tag, stage, artifact and lineage (make models)",
    )
    p.add_argument("name", nargs="?", default=None, help="only the models of this name")
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p = sub.add_parser(
        "example-request",
        help="print a /predict body: the first row of the model's serving input example",
    )
    p.add_argument(
        "tag", nargs="?", default=None, help="a bento or model tag (default: the newest bento)"
    )


def add_tags(sub: Any) -> None:
    """``cut`` and ``latest``: release tags and the newest bento."""
    p = sub.add_parser("cut", help="tag HEAD with the next release version")
    p.add_argument("part", choices=["major", "minor", "patch"], help="which number to bump")
    p.add_argument("--dry-run", action="store_true", help="print the tag, create nothing")
    p = sub.add_parser("latest", help="print the newest bento of the service in the store")
    p.add_argument("--name", default=None, help="bento name (default: bentofile.yaml's)")


def cmd_build(args: argparse.Namespace) -> int:
    from release.build import build_release

    result = build_release(
        args.repo,
        model=args.model,
        base_image=args.base_image,
        allow_non_prod=args.allow_non_prod,
        candidate=args.candidate,
    )
    print("\n".join(result.lines()))
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from release.build import build_dev

    result = build_dev(
        args.repo,
        model=args.model,
        base_image=args.base_image,
        allow_non_prod=args.allow_non_prod,
        candidate=args.candidate,
    )
    print("\n".join(result.lines()))
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    from release.build import read_bentofile, resolve_model, wanted_model

    try:
        config = read_bentofile(args.repo)
    except ReleaseError:
        config = {}  # no bentofile here: TAGSERVE_MODEL or the default model
    model = resolve_model(wanted_model(config, args.tag), allow_non_prod=args.allow_non_prod)
    print(model.tag)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from release.models import store_models, table

    lines = store_models(args.name)
    if args.json:
        print(strict_json.dumps([asdict(line) for line in lines]))
    elif lines:
        print(table(lines))
    else:
        which = f"no model {args.name!r}" if args.name else "no model"
        print(f"{which} in the BentoML store: import one (`python -m importers`)")
    return 0


def cmd_cut(args: argparse.Namespace) -> int:
    from release import git
    from release.versions import next_version

    root = git.repo_root(args.repo)
    head = git.head_state(root)
    if head.release_tags:
        raise ReleaseError(f"HEAD is already tagged {', '.join(head.release_tags)}")
    if head.dirty:
        raise ReleaseError(
            f"the work tree has uncommitted changes ({head.describe_changes()}): commit "
            "them before tagging a release"
        )
    tag = next_version(git.all_tags(root), args.part)
    if args.dry_run:
        print(tag)
        return 0
    git.create_tag(root, tag, f"tagserve {tag}")
    print(f"tagged {tag} at {head.commit[:12]}; build it with `python -m release build`")
    print(f"publish the tag with `git push origin {tag}`")
    return 0


def _newest_bento(name: str) -> str:
    import bentoml

    bentos = [b for b in bentoml.bentos.list(name) if b.tag.name == name]
    if not bentos:
        raise ReleaseError(f"no {name} bento in the store: build one (`python -m release dev`)")
    return str(max(bentos, key=lambda b: b.info.creation_time).tag)


def _bento_name(repo: Path) -> str:
    from release.build import bento_name, read_bentofile

    try:
        return bento_name(read_bentofile(repo))
    except ReleaseError:
        return "tagserve"


def cmd_latest(args: argparse.Namespace) -> int:
    print(_newest_bento(args.name or _bento_name(args.repo)))
    return 0


def cmd_example_request(args: argparse.Namespace) -> int:
    import bentoml

    from release.build import built_model, example_record

    tag = args.tag or _newest_bento(_bento_name(args.repo))
    try:
        bento = bentoml.bentos.get(tag)
    except (bentoml.exceptions.NotFound, ValueError):
        model = built_model(tag)  # not a bento: a model tag
    else:
        models = bento.info.all_models
        if not models:
            raise ReleaseError(f"bento {tag} holds no model")
        model = built_model(str(models[0].tag))
    record = example_record(model)
    if not record:
        raise ReleaseError(f"model {model.tag} has no serving input example")
    print(strict_json.dumps(record))
    return 0


COMMANDS = {
    "build": cmd_build,
    "dev": cmd_dev,
    "cut": cmd_cut,
    "latest": cmd_latest,
    "model": cmd_model,
    "models": cmd_models,
    "example-request": cmd_example_request,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("ignore")  # MLflow/pydantic chatter while the service is imported
    return run_command(lambda: COMMANDS[args.command](args))
