"""The interop tests share tests/util.py and tests/daemons/harness.py (nginx, TLS clients)."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent
for _path in (str(_TESTS), str(_TESTS / "daemons"), str(_TESTS / "interop")):
    if _path not in sys.path:
        sys.path.insert(0, _path)
