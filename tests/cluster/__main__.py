"""``python -m tests.cluster`` (from the repository's root): the dev cluster of `make dev-cluster`."""

from __future__ import annotations

import sys

from tests.cluster.devcluster import main

if __name__ == "__main__":
    sys.exit(main())
