"""Write the configuration reference table from helper/config/__init__.py into README.md.

Usage: python tools/sync_readme.py [--check]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- reference-table:start[^>]*-->\n).*?(<!-- reference-table:end -->)",
                   re.DOTALL)


def synced(text: str) -> str:
    sys.path.insert(0, str(ROOT))
    from helper.config import reference_table_markdown

    table = reference_table_markdown().rstrip("\n") + "\n"
    if not BLOCK.search(text):
        raise SystemExit("README.md has no reference-table markers")
    return BLOCK.sub(lambda m: m.group(1) + table + m.group(2), text)


def main(argv: list[str]) -> int:
    text = README.read_text()
    new = synced(text)
    if "--check" in argv:
        return 0 if new == text else 1
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
