"""The benchmark suite from a source checkout: the same as ``python -m canonical_raft bench``.

    python benchmarks/bench.py [--smoke | --quick | --full] [--json FILE] [--plot PNG]

It runs the installed package (build it first: ``pip install .``), whose
``canonical_raft/bin/craft_ceiling`` is the C ceiling built from ceiling/ceiling.c.
"""

from __future__ import annotations

import sys

from canonical_raft.bench import main

if __name__ == "__main__":
    sys.exit(main())
