"""Read a command line the way Go's `flag` package does, then hand it to argparse.

Go users type Go habits, and argparse reads them differently: `-conf x` becomes
`-c onf` (short-option bundling) and `-con x` an abbreviation of `-config`. This front
end walks the arguments with Go's rules and gives argparse only canonical tokens:

* `-flag`, `--flag`, `-flag=value`, `--flag=value`; a flag that takes a value also
  takes the next argument as it (whatever it looks like, as Go does);
* a boolean flag (`-version`, `-daemon-mode`) takes `=BOOL` (`-daemon-mode=false`);
  a following `true`/`false` word is read as its value too (argparse used to accept it);
* an unknown name is an error that names it: `flag provided but not defined: -conf`;
* no bundling, no abbreviations;
* flags end at `--` (what follows is the command to supervise, where one is allowed)
  or at the first argument that is not a flag.

`HelpFormatter` never breaks a line inside a hyphenated word such as spiffe-helper.
"""

from __future__ import annotations

import argparse
import re
import textwrap
from collections.abc import Sequence

BOOL_WORDS = ("1", "t", "T", "true", "TRUE", "True", "0", "f", "F", "false", "FALSE", "False")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Wrap help text without breaking hyphenated words; keep indented lines as written."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        text = re.sub(r"\s+", " ", text).strip()
        return textwrap.wrap(text, width, break_on_hyphens=False) or [""]

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.strip("\n").split("\n\n"):
            if any(line.startswith(" ") for line in paragraph.splitlines()):
                paragraphs.append(textwrap.indent(paragraph, indent))
            else:
                paragraphs.append(textwrap.fill(
                    re.sub(r"\s+", " ", paragraph).strip(), width, initial_indent=indent,
                    subsequent_indent=indent, break_on_hyphens=False))
        return "\n\n".join(paragraphs)


def _table(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    table: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse has no public accessor
        for option in action.option_strings:
            table[option.lstrip("-")] = action
    return table


def _is_bool(action: argparse.Action) -> bool:
    return action.nargs == 0 or (action.nargs == "?" and action.const is True)


def _canonical(action: argparse.Action) -> str:
    return max(action.option_strings, key=len)


def parse(
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    *,
    command: bool = False,
) -> tuple[argparse.Namespace, list[str] | None]:
    """Parse ``argv`` with Go's flag rules; exit 2 with a one-line error on a bad one.

    Returns the namespace and, when ``command`` is true, what followed ``--`` (None when
    there was no ``--``). Arguments that are not flags are an error unless ``parser``
    declares positional arguments.
    """
    table = _table(parser)
    tokens: list[str] = []
    rest: list[str] | None = None
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            rest = args[i:]
            if not command:
                parser.error(f"unexpected arguments after --: {' '.join(rest) or '(none)'}")
            break
        if not arg.startswith("-") or arg == "-":
            positionals = args[i - 1:]
            if not any(not a.option_strings for a in parser._actions):
                hint = (" (put the command to supervise after --)" if command else "")
                parser.error(f"unexpected argument {arg!r}{hint}")
            tokens.append("--")
            tokens.extend(positionals)
            break
        dashes = 2 if arg.startswith("--") else 1
        name, equals, value = arg[dashes:].partition("=")
        has_value = bool(equals)
        if not name or name.startswith("-") or name.startswith("="):
            parser.error(f"bad flag syntax: {arg}")
        action = table.get(name)
        if action is None:
            import difflib

            known = sorted({_canonical(a).lstrip("-") for a in table.values()})
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean -{close[0]}?)" if close else ""
            parser.error(f"flag provided but not defined: -{name}{hint}")
        option = _canonical(action)
        if _is_bool(action):
            if not has_value and i < len(args) and args[i] in BOOL_WORDS:
                value, has_value = args[i], True
                i += 1
            if action.nargs == 0:
                if has_value and value not in BOOL_WORDS:
                    parser.error(f"invalid boolean value {value!r} for -{name}")
                if not has_value or value in BOOL_WORDS[:6]:
                    tokens.append(option)
            else:
                tokens.append(f"{option}={value}" if has_value else option)
            continue
        if not has_value:
            if i >= len(args):
                parser.error(f"flag needs an argument: -{name}")
            value = args[i]
            i += 1
        tokens.append(f"{option}={value}")
    return parser.parse_args(tokens), rest
