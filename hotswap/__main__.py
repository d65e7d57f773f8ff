"""`python -m hotswap` runs the command line."""

import sys

from hotswap.cli import main

sys.exit(main())
