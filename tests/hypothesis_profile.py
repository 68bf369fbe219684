"""The one hypothesis profile of this suite, loaded by tests/conftest.py.

The same locally and in CI (hypothesis would otherwise switch to its "ci" profile when the
CI variable is set: derandomized, no example database, different health checks), apart
from the example count of tests that do not set their own:

- random: every run draws new examples (no derandomize), so the suite keeps exploring;
  regressions found once are pinned with ``@example`` in the test itself, which runs
  every time;
- replayable: failing examples are saved in ``.hypothesis/examples`` (git-ignored) and
  tried first on the next run; the directory must be writable, or the session fails
  instead of silently running without it; ``print_blob`` prints a ``@reproduce_failure``
  line, so a CI failure can be replayed anywhere;
- no default deadline: many properties start processes or parse with cryptography, whose
  timing depends on the machine's load; tests that want one set it themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

NAME = "spiffe-helper"
DATABASE = Path(__file__).resolve().parent.parent / ".hypothesis" / "examples"
LOCAL_EXAMPLES = 100
CI_EXAMPLES = 200


def in_ci(environ: Mapping[str, str]) -> bool:
    return environ.get("CI", "").lower() not in ("", "0", "false", "no")


def profile(environ: Mapping[str, str] = os.environ) -> settings:
    """The settings the suite runs with under `environ`."""
    return settings(
        database=DirectoryBasedExampleDatabase(DATABASE),
        derandomize=False,
        print_blob=True,
        deadline=None,
        suppress_health_check=(),
        max_examples=CI_EXAMPLES if in_ci(environ) else LOCAL_EXAMPLES,
    )


def load() -> None:
    """Register and load the profile; fail when the example database cannot be written."""
    DATABASE.mkdir(parents=True, exist_ok=True)
    if not os.access(DATABASE, os.W_OK | os.X_OK):
        raise RuntimeError(f"hypothesis example database {DATABASE} is not writable: failing "
                           "examples would not be kept for the next run")
    settings.register_profile(NAME, profile())
    settings.load_profile(NAME)
