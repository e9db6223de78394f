"""Tests of the benchmark suite's own parts (``bench/``), from a source tree.

``bench/`` is not in the sdist (MANIFEST.in grafts ``tests/`` only), and
scripts/wheel_check.sh runs the suite from a copy of the sdist's ``tests/``:
there is nothing to test there, so this directory is not collected. In a
source tree the repository root goes on ``sys.path``, so ``import bench``
works however pytest is started; its servers run with the tree's ``src``
(``bench.servers.subprocess_env``).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

if (REPO / "bench" / "__init__.py").is_file():
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
else:
    collect_ignore_glob = ["test_*.py"]
