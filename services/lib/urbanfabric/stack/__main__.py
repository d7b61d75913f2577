"""``python -m urbanfabric.stack up|status|down``."""

import sys

from urbanfabric.stack.commands import main

sys.exit(main(sys.argv[1:]))
