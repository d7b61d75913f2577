"""``python -m urbanfabric.stack up|status|down``."""

import sys

from urbanfabric.stack.cli import main

sys.exit(main(sys.argv[1:]))
