"""Files written whole or not at all: the one atomic write of the project.

A reader (another process, a resumed run, the service) must never see a missing, empty or
half-written file, not even after a crash: the content goes to a temporary file in the same
folder (so the rename cannot cross file systems), is flushed to disk, and is renamed over the
target in one step; the folder is flushed too, so that the rename survives a power loss.
Temporary names start with a dot and end with ``.tmp``: listings that skip hidden files never
show them, and a resumed run can find strays left by a killed one.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_atomically(
    path: Path, write: Callable[[IO[bytes]], None], *, mode: int | None = None
) -> None:
    """``write(file)`` into a temporary file beside ``path``, then replace ``path`` with it.

    ``mode``: the new file's permission bits (by default those of a new file under the
    umask). The temporary file is removed on any failure, an interrupt included.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        if mode is not None:
            tmp.chmod(mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    flush_folder(path.parent)


def move_folder_into_place(staged: Path, target: Path) -> None:
    """Publish the folder ``staged``, written whole beforehand, as ``target`` in one rename.

    ``target`` must not exist (or be an empty folder): a published folder is never replaced
    under its readers. ``staged`` must be on the same file system, best in the same folder.
    """
    os.rename(staged, target)
    flush_folder(Path(target).parent)


def flush_folder(path: Path) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk."""
    with contextlib.suppress(OSError):  # not every file system can flush a folder
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
