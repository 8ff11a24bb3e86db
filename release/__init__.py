"""Release builds of the tagserve bento: version = the git release tag at HEAD.

CLI (``python -m release``, ``make release``)::

    python -m release build            # bento <name>:<tag at HEAD>, refuses anything else
    python -m release dev              # make demo: a development bento (dev-<commit>)
    python -m release cut patch        # tag the next version (major / minor / patch)
    python -m release latest           # the newest bento in the store
    python -m release example-request  # a /predict body from the model's input example

Python API: :func:`release.build.build_release`, :func:`release.build.build_dev`.
"""

from release.errors import ReleaseError
from release.versions import is_release_tag, next_version, parse_release_tag

__all__ = ["ReleaseError", "is_release_tag", "next_version", "parse_release_tag"]
