"""Errors worded for the user: each one is shown as one readable line, never a traceback."""

from __future__ import annotations


class TagserveError(Exception):
    """A failure the user can act on (bad input, bad config, a refused model...).

    Every command line prints it as ``error: <message>`` and exits non-zero.
    """


class InputError(TagserveError, ValueError):
    """Input data that does not fit the model's signature (a service answers 4xx)."""


class ModelRefused(TagserveError):
    """A model artifact that breaks the trust rules or cannot be loaded."""


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """``exc`` as one line: its message with whitespace folded; the type for anything that is
    not a :class:`TagserveError` (a bug or an environment problem), cut at ``limit``."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, TagserveError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
