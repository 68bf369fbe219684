"""Split ``cmd_args`` the way the Go spiffe-helper does.

The Go helper reads ONE record with Go's encoding/csv Reader, Comma set to a space
(LazyQuotes and TrimLeadingSpace off). That gives these rules:

* fields are separated by single spaces; two spaces in a row make an empty field;
* a field that starts with ``"`` is quoted: it runs to the closing quote, ``""`` inside
  it is one literal quote, and the closing quote must be followed by a space or the end
  of the record;
* a ``"`` anywhere in an unquoted field is an error, as is an unterminated quote;
* single quotes and backslashes are ordinary characters; there is no shell;
* a line break outside quotes ends the record (the rest is ignored); leading empty
  lines are skipped; inside quotes a line break is kept, with CR LF read as LF;
* the empty string gives no arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_QUOTE = '"'
_COMMA = " "
ERR_BARE_QUOTE = 'bare " in non-quoted-field'
ERR_QUOTE = 'extraneous or missing " in quoted-field'


def split_cmd_args(text: str) -> list[str]:
    """Split ``text`` into an argument vector; raise ValueError when Go would fail."""
    if text == "":
        return []
    return _RecordReader(text).read_record()


@dataclass
class _RecordReader:
    """A line-oriented reader mirroring Go's csv.Reader.readLine/readRecord for one record."""

    text: str
    pos: int = 0
    line_number: int = 0
    fields: list[str] = field(default_factory=list)

    def read_line(self) -> str | None:
        """The next line with its trailing LF (CR LF read as LF); None at the end."""
        self.line_number += 1  # Go counts a line even when the read hits the end
        if self.pos >= len(self.text):
            return None
        end = self.text.find("\n", self.pos)
        if end < 0:
            line = self.text[self.pos :]
            self.pos = len(self.text)
            if line.endswith("\r"):  # Go drops a trailing CR before end of input
                line = line[:-1]
        else:
            line = self.text[self.pos : end + 1]
            self.pos = end + 1
        if line.endswith("\r\n"):
            line = line[:-2] + "\n"
        return line

    def first_line(self) -> str:
        """The first line that is not empty, as Go skips empty lines before a record."""
        while True:
            line = self.read_line()
            if line is None:
                raise ValueError("cmd_args holds no arguments, only line breaks")
            if line not in ("", "\n"):
                return line

    def read_record(self) -> list[str]:
        line = self.first_line()
        full_line = line
        record_line = self.line_number
        while True:
            if not line.startswith(_QUOTE):
                line, more = self._unquoted_field(line, full_line, record_line)
            else:
                line, full_line, more = self._quoted_field(line[1:], full_line, record_line)
            if not more:
                return self.fields

    def _unquoted_field(self, line: str, full_line: str, record_line: int) -> tuple[str, bool]:
        comma = line.find(_COMMA)
        text = line[:comma] if comma >= 0 else _strip_lf(line)
        quote = text.find(_QUOTE)
        if quote >= 0:
            column = len(full_line) - len(line) + quote
            raise self._error(record_line, column, ERR_BARE_QUOTE)
        self.fields.append(text)
        if comma >= 0:
            return line[comma + 1 :], True
        return "", False

    def _quoted_field(
        self, line: str, full_line: str, record_line: int
    ) -> tuple[str, str, bool]:
        parts: list[str] = []
        while True:
            quote = line.find(_QUOTE)
            if quote >= 0:
                parts.append(line[:quote])
                line = line[quote + 1 :]
                if line.startswith(_QUOTE):
                    parts.append(_QUOTE)
                    line = line[1:]
                    continue
                if line.startswith(_COMMA):
                    self.fields.append("".join(parts))
                    return line[1:], full_line, True
                if line in ("", "\n"):
                    self.fields.append("".join(parts))
                    return "", full_line, False
                column = len(full_line) - len(line) - 1
                raise self._error(record_line, column, ERR_QUOTE)
            if line:
                parts.append(line)
                next_line = self.read_line()
                line = "" if next_line is None else next_line
                full_line = line
                continue
            raise self._error(record_line, len(full_line), ERR_QUOTE)

    def _error(self, record_line: int, column: int, problem: str) -> ValueError:
        """Go's csv.ParseError text: lines count from 1, columns (runes) from 0."""
        if record_line != self.line_number:
            where = (
                f"record on line {record_line}; parse error on line {self.line_number}, "
                f"column {column}"
            )
        else:
            where = f"parse error on line {self.line_number}, column {column}"
        return ValueError(f"{where}: {problem}")


def _strip_lf(line: str) -> str:
    return line[:-1] if line.endswith("\n") else line


def join_cmd_args(argv: list[str]) -> str:
    """The cmd_args text that ``split_cmd_args`` reads back as ``argv`` (Go csv quoting).

    Raise ValueError for the few vectors the format cannot hold (a CR LF inside an
    argument is read back as LF).
    """
    fields = []
    for arg in argv:
        if arg == "" or any(c in arg for c in ' "\r\n'):
            arg = _QUOTE + arg.replace(_QUOTE, _QUOTE * 2) + _QUOTE
        fields.append(arg)
    text = _COMMA.join(fields)
    if split_cmd_args(text) != argv:
        raise ValueError(f"cannot pass these arguments through cmd_args: {argv!r}")
    return text
