"""The one error type of the release CLI: its message is the one line the user sees."""

from inference.errors import TagserveError


class ReleaseError(TagserveError):
    """A refusal or a failure, worded for the user (printed as ``error: <message>``)."""
