"""``python -m canonical_raft``: the command line (see cli.py)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
