"""`python -m autolfads.cli`: the `autolfads` command of this checkout."""

import sys

from .main import main

sys.exit(main())
