"""The README is part of the feature: its reference table and guarantees must be true."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from helper import config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_table_matches_the_key_registry():
    reference = (DOCS / "configuration.md").read_text()
    assert _load_tool("gen_config_docs").synced(reference) == reference, (
        "docs/configuration.md is stale: run python tools/gen_config_docs.py")


def test_every_key_is_in_the_reference_table():
    table = config.reference_table_markdown()
    assert table in (DOCS / "configuration.md").read_text()
    for name in (f.name for f in config.Config.__dataclass_fields__.values()):
        if name in ("source", "address"):
            continue
        assert f"`{name}`" in table, name


def test_every_test_named_in_the_guarantees_exists():
    text = (DOCS / "guarantees.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")
            and not line.startswith(("| promise", "| fault"))]
    assert len(rows) >= 80
    named = 0
    for row in rows:
        # each promise names its proof: `tests/x.py`, `tests/x.py::test`, and `::test` for
        # another test of the file named before it on the same row
        refs = re.findall(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`", row)
        refs = [(path, test) for path, test in refs if path or test]
        assert refs, f"a guarantee without its test: {row[:80]}"
        current = None
        for path, test in refs:
            if path:
                current = ROOT / path
                assert current.exists(), path
            assert current is not None, f"::{test} before any file: {row[:80]}"
            if test:
                assert f"def {test}(" in current.read_text(), \
                    f"{current.relative_to(ROOT)}::{test}"
            named += 1
    assert named >= 150


def test_first_screen_has_the_two_commands():
    first_screen = "\n".join(README.splitlines()[:20])
    assert "pip install . && spiffe-helper demo" in first_screen
    assert "./.ci/run" in first_screen
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m pytest" in ci
