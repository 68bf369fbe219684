"""The suite's hypothesis settings are the same in CI and locally, apart from example counts."""

from __future__ import annotations

import hypothesis_profile
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase


def test_the_profile_is_loaded_whatever_the_environment():
    current = settings.default
    assert current.database == DirectoryBasedExampleDatabase(hypothesis_profile.DATABASE)
    assert current.print_blob
    assert not current.derandomize


def test_ci_and_local_differ_only_in_example_counts():
    local = hypothesis_profile.profile({})
    ci = hypothesis_profile.profile({"CI": "true"})
    assert ci.max_examples >= local.max_examples
    for name in ("database", "derandomize", "print_blob", "deadline", "suppress_health_check",
                 "phases", "report_multiple_bugs", "verbosity"):
        assert getattr(local, name) == getattr(ci, name), name
    assert hypothesis_profile.profile({"CI": "false"}).max_examples == local.max_examples


def test_failing_examples_are_kept_where_the_next_run_finds_them():
    assert hypothesis_profile.DATABASE.is_dir()
    probe = hypothesis_profile.DATABASE / ".write-probe"
    probe.write_bytes(b"")
    probe.unlink()
    gitignore = (hypothesis_profile.DATABASE.parent.parent / ".gitignore").read_text()
    assert ".hypothesis/" in gitignore.splitlines()
