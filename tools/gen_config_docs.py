"""Write the configuration reference table from the key registry into docs/configuration.md.

Usage: python tools/gen_config_docs.py [--check]

Only the block between the reference-table markers is generated; the text around it is
written by hand. --check changes nothing and exits 1 when the file is stale
(tests/test_docs.py runs the same comparison).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "configuration.md"
BLOCK = re.compile(r"(<!-- reference-table:start[^>]*-->\n).*?(<!-- reference-table:end -->)",
                   re.DOTALL)


def synced(text: str) -> str:
    sys.path.insert(0, str(ROOT))
    from helper.config import reference_table_markdown

    table = reference_table_markdown().rstrip("\n") + "\n"
    if not BLOCK.search(text):
        raise SystemExit(f"{REFERENCE.relative_to(ROOT)} has no reference-table markers")
    return BLOCK.sub(lambda m: m.group(1) + table + m.group(2), text)


def main(argv: list[str]) -> int:
    text = REFERENCE.read_text()
    new = synced(text)
    if "--check" in argv:
        return 0 if new == text else 1
    REFERENCE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
