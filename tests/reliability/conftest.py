"""Fixtures of the reliability suite; the shared helpers are in relutil.py."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:  # tests/util.py and tests/pki.py
    sys.path.insert(0, str(TESTS))

# The fixtures `agent` and `certs` are tests/conftest.py's.
