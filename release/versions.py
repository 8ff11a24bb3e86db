"""Release tags (semantic versioning) and development versions.

A release tag is ``X.Y.Z`` or ``vX.Y.Z`` (no leading zeros), optionally with a lower-case
semver pre-release (``v1.2.0-rc.1``). Build metadata (``+...``) is refused: BentoML versions
cannot hold ``+``. The bento version is the tag itself, so ``v1.2.3`` builds
``tagserve:v1.2.3``.

A development version is ``dev-<12 hex of the commit>[-dirty]``: it cannot pass for a
release (it does not start with a number).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUM = r"(0|[1-9]\d*)"
_PRE_ID = r"(?:0|[1-9]\d*|\d*[a-z-][0-9a-z-]*)"
RELEASE_TAG = re.compile(
    rf"^(?P<prefix>v?){_NUM}\.{_NUM}\.{_NUM}(?:-(?P<pre>{_PRE_ID}(?:\.{_PRE_ID})*))?$"
)
PARTS = ("major", "minor", "patch")
DEV_PREFIX = "dev-"


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: str = ""
    prefix: str = ""

    @property
    def is_final(self) -> bool:
        return not self.pre

    def tag(self) -> str:
        text = f"{self.prefix}{self.major}.{self.minor}.{self.patch}"
        return f"{text}-{self.pre}" if self.pre else text


def parse_release_tag(tag: str) -> Version | None:
    """The version a release tag names, or None if ``tag`` is not one."""
    match = RELEASE_TAG.match(tag)
    if not match:
        return None
    major, minor, patch = (int(match.group(i)) for i in (2, 3, 4))
    return Version(major, minor, patch, match.group("pre") or "", match.group("prefix"))


def is_release_tag(tag: str) -> bool:
    return parse_release_tag(tag) is not None


def next_version(tags: list[str], part: str, default_prefix: str = "v") -> str:
    """The tag after the highest final release among ``tags``, bumping ``part``.

    Its prefix (``v`` or none) follows that release's; with no release yet it is
    ``default_prefix`` + 0.0.1 / 0.1.0 / 1.0.0.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)}, not {part!r}")
    finals = [v for v in map(parse_release_tag, tags) if v is not None and v.is_final]
    if not finals:
        current = Version(0, 0, 0, prefix=default_prefix)
    else:
        current = max(finals, key=lambda v: (v.major, v.minor, v.patch))
    if part == "major":
        bumped = Version(current.major + 1, 0, 0, prefix=current.prefix)
    elif part == "minor":
        bumped = Version(current.major, current.minor + 1, 0, prefix=current.prefix)
    else:
        bumped = Version(current.major, current.minor, current.patch + 1, prefix=current.prefix)
    return bumped.tag()


def dev_version(commit: str | None, dirty: bool) -> str:
    """``dev-<commit12>`` (``-dirty`` when the tree has changes), ``dev-nogit`` outside git."""
    version = f"{DEV_PREFIX}{commit[:12]}" if commit else f"{DEV_PREFIX}nogit"
    return f"{version}-dirty" if dirty else version
