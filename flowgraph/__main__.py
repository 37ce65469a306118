"""``python -m flowgraph``: the same command line as the ``flowgraph`` script."""

from __future__ import annotations

import sys

from flowgraph._cli import main

if __name__ == "__main__":
    sys.exit(main())
