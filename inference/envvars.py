"""Environment variables set for the duration of a block, then restored."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def scoped_env(**values: str) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` inside the block; restore (or remove) them after."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
