"""The one error type the clients raise for anything a user can fix."""

from __future__ import annotations

from inference.errors import TagserveError


class ClientError(TagserveError):
    """Bad input, an unusable model or output, or a service that keeps failing.

    The CLI prints it as one ``error: ...`` line and exits with a non-zero code.
    """
