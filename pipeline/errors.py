"""Errors the pipeline reports to the user as one readable line (no traceback)."""

from inference.errors import TagserveError


class PipelineError(TagserveError):
    """A failure the user can act on: bad input, bad config, a failed check."""
