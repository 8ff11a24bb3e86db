"""``python -m release``: see ``release.cli``."""

import sys

from release.cli import main

sys.exit(main())
