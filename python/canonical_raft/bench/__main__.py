"""``python -m canonical_raft.bench``: the benchmark suite (see __init__.py)."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
