"""Errors the pipeline reports to the user as one readable line (no traceback)."""


class PipelineError(Exception):
    """A failure the user can act on: bad input, bad config, a failed check."""
