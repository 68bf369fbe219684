"""The documentation is part of the feature: the README stays short and its commands work,
the configuration reference is the key registry's, every guarantee names a test that
exists, the migration tables agree, and every link between the documents resolves."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

from util import helper_cmd

from helper import config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
README_MAX_BYTES = 12 * 1024
# every document that links to others: the README, docs/, the benchmarks' README
DOCUMENTS = [ROOT / "README.md", *sorted(DOCS.glob("*.md")), ROOT / "bench" / "README.md"]


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
    # the README's test command is the one CI runs
    assert "python3 -m pytest" in first_screen
    assert "pip install -e '.[dev]' && python -m pytest" in README


def test_the_readme_stays_short():
    size = len(README.encode())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes, over {README_MAX_BYTES}: move details to docs/")


def test_the_readme_first_config_passes_check_config(tmp_path):
    block = README.split("## A complete first config", 1)[1]
    hcl = re.search(r"```hcl\n(.*?)```", block, re.DOTALL).group(1)
    cert_dir = re.search(r'^cert_dir = "([^"]+)"', hcl, re.MULTILINE).group(1)
    (tmp_path / "certs").mkdir()
    conf = tmp_path / "helper.conf"
    conf.write_text(hcl.replace(cert_dir, str(tmp_path / "certs")))
    # the very command the README gives next
    assert "spiffe-helper check-config -config helper.conf" in block
    result = subprocess.run(helper_cmd("check-config", "-config", str(conf)),
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = config.load(conf)
    assert loaded.cmd == "nginx"
    assert loaded.renew_signal == "SIGHUP"
    assert loaded.svid_file_name
    assert loaded.svid_key_file_name
    assert loaded.svid_bundle_file_name
    assert loaded.health_checks.listener_enabled


def _table_rows(text: str, header: str) -> list[list[str]]:
    """The rows of the markdown table whose header row starts with `header`, as cells."""
    start = text.index(header)
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_the_readme_migration_table_is_the_full_one_in_short():
    header = "| Go spiffe-helper | this helper | why |"
    short = _table_rows(README, header)
    full = _table_rows((DOCS / "migration.md").read_text(), header)
    # one row per deliberate difference, in both, in the same order
    assert len(short) == len(full) >= 25
    for brief, detailed in zip(short, full, strict=True):
        assert len(brief) == len(detailed) == 3, brief
        assert all(brief), brief
        assert all(detailed), detailed
        # the short Go cell speaks of the same thing as the full one
        for token in re.findall(r"`([^`]+)`", brief[0]):
            assert f"`{token}`" in detailed[0], (token, detailed[0])


_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a markdown file (code blocks skipped)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"#{1,6} ", line):
            continue
        title = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links(markdown: str) -> list[str]:
    text = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return _LINK.findall(text)


def test_every_relative_link_and_anchor_resolves():
    assert len(DOCUMENTS) >= 10
    checked = 0
    for document in DOCUMENTS:
        for link in _links(document.read_text()):
            if re.match(r"[a-z]+:", link):
                continue  # http(s), mailto: not checked here
            path, _, anchor = link.partition("#")
            target = (document.parent / path).resolve() if path else document
            where = f"{document.relative_to(ROOT)}: {link}"
            assert target.exists(), where
            assert ROOT in target.parents or target == ROOT, where
            if anchor:
                assert target.suffix == ".md", where
                assert anchor in _anchors(target.read_text()), where
            checked += 1
    assert checked >= 40


def test_every_document_is_reachable_from_the_readme():
    linked = {(ROOT / link.partition("#")[0]).resolve() for link in _links(README)}
    for document in DOCUMENTS[1:]:
        assert document in linked, f"README.md does not link {document.relative_to(ROOT)}"


def test_every_test_file_a_document_names_exists():
    for document in DOCUMENTS:
        for path in re.findall(r"`(tests/[\w/]+\.py)", document.read_text()):
            assert (ROOT / path).exists(), f"{document.relative_to(ROOT)}: {path}"


def test_the_stated_systemd_exposure_is_the_one_the_security_test_enforces():
    source = (ROOT / "tests" / "test_systemd_security.py").read_text()
    block = source.split("MAX_EXPOSURE = {", 1)[1].split("}", 1)[0]
    enforced = {unit: float(score)
                for unit, score in re.findall(r'"([^"]+)": (\d+\.\d+)', block)}
    assert len(enforced) >= 4
    for document in (DOCS / "operations.md", DOCS / "systemd.md"):
        stated = {}
        for unit, score in re.findall(r"^\s*\| `([^`]+)`[^\n]*\| \**(\d+\.\d+) [A-Z]+\**\s*\|$",
                                      document.read_text(), re.MULTILINE):
            stated.setdefault(unit, float(score))
        for unit, score in enforced.items():
            assert stated.get(unit) == score, \
                f"{document.name}: {unit} {stated.get(unit)} != {score}"


def test_the_architecture_table_lists_every_module_and_only_those():
    """docs/architecture.md's module table, one row per module, matches helper/ on disk."""
    listed: set[str] = set()
    folder = ""
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or len(cells) != 3:
            continue
        heading = re.fullmatch(r"\*\*`helper/([\w/]*)`\*\*", cells[0])
        if heading:
            folder = heading.group(1)
            continue
        for name in re.findall(r"`([\w.]+(?:\.py|/))`", cells[0]):
            listed.add(folder + name.rstrip("/"))
    helper = ROOT / "helper"
    on_disk = {str(path.relative_to(helper)) for path in helper.rglob("*.py")
               if path.name != "__init__.py" and "_proto" not in path.parts}
    on_disk.add("_proto")
    assert listed == on_disk, (f"missing from the table: {sorted(on_disk - listed)}; "
                               f"listed but not in helper/: {sorted(listed - on_disk)}")
