"""The private BentoML internals the service relies on, in one place, checked against the
one BentoML version they were read from (a newer BentoML fails here, loudly, at import)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bentoml

KNOWN_VERSION = "1.4.39"
if bentoml.__version__ != KNOWN_VERSION:  # pragma: no cover - guarded by the lock
    raise ImportError(
        f"tagserve's service uses BentoML {KNOWN_VERSION} internals (serving/bentoml_private.py); "
        f"this is BentoML {bentoml.__version__}: check them and update KNOWN_VERSION"
    )

from _bentoml_sdk.io_models import IORootModel  # noqa: E402  (BentoML 1.4's root input)


def arguments() -> dict[str, Any]:
    """The bento arguments (``bentoml serve/build --arg``, or those a bento carries)."""
    return dict(vars(bentoml.use_arguments()))


def record_arguments(values: Mapping[str, Any]) -> None:
    """Add ``values`` to the bento arguments where they are not set yet.

    ``bentoml build`` stores the arguments in bento.yaml and ``bentoml serve`` passes them to
    every worker (the arguments given on the command line win).
    """
    from bentoml._internal.utils.args import set_arguments

    set_arguments({k: v for k, v in values.items() if v is not None}, override=False)


def reset_arguments() -> None:
    """Forget the bento arguments (tests building several services in one process)."""
    from bentoml._internal.utils.args import set_arguments

    set_arguments({})


__all__ = ["IORootModel", "arguments", "record_arguments", "reset_arguments"]
