"""`python -m importers`: see :mod:`importers.cli`."""

import sys

from importers.cli import main

sys.exit(main())
