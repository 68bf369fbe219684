"""cmd_args splitting, pinned to Go's encoding/csv Reader (Comma=' ', one Read()).

Expectations follow Go's encoding/csv reader.go (readLine/readRecord), which the Go
spiffe-helper's getCmdArgs uses; each id says which rule of that reader it pins.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helper.supervise.cmdargs import ERR_BARE_QUOTE, ERR_QUOTE, split_cmd_args

SPLITS = [
    pytest.param("", [], id="getCmdArgs-empty-string-no-args"),
    pytest.param("start_envoy.sh", ["start_envoy.sh"], id="single-field"),
    pytest.param("server --listen localhost:8002", ["server", "--listen", "localhost:8002"],
                 id="split-on-single-spaces"),
    pytest.param("a  b", ["a", "", "b"], id="csv-consecutive-spaces-give-empty-field"),
    pytest.param(" a", ["", "a"], id="csv-leading-space-gives-empty-field"),
    pytest.param("a ", ["a", ""], id="csv-trailing-space-gives-empty-field"),
    pytest.param(" ", ["", ""], id="csv-lone-space-two-empty-fields"),
    pytest.param('"a b" c', ["a b", "c"], id="csv-quotes-group-words"),
    pytest.param('-e "ALTER INSTANCE RELOAD TLS;"', ["-e", "ALTER INSTANCE RELOAD TLS;"],
                 id="go-mysql-example"),
    pytest.param('-p 5432 -c "SELECT pg_reload_conf();"',
                 ["-p", "5432", "-c", "SELECT pg_reload_conf();"], id="go-postgresql-example"),
    pytest.param('"a""b"', ['a"b'], id="csv-doubled-quote-is-literal-quote"),
    pytest.param('""', [""], id="csv-empty-quoted-field"),
    pytest.param('"" ""', ["", ""], id="csv-two-empty-quoted-fields"),
    pytest.param('""""', ['"'], id="csv-quoted-single-quote"),
    pytest.param('"a" b', ["a", "b"], id="csv-quote-then-space"),
    pytest.param("'a b'", ["'a", "b'"], id="csv-single-quotes-are-ordinary"),
    pytest.param("a\\ b", ["a\\", "b"], id="csv-backslash-is-ordinary"),
    pytest.param("a\tb", ["a\tb"], id="csv-tab-is-ordinary"),
    pytest.param("a\nb c", ["a"], id="csv-newline-ends-the-record"),
    pytest.param("a b\n", ["a", "b"], id="csv-trailing-newline-ignored"),
    pytest.param("a\r\nb", ["a"], id="csv-crlf-ends-the-record"),
    pytest.param("a\r", ["a"], id="csv-readLine-drops-trailing-cr-at-eof"),
    pytest.param("a\rb", ["a\rb"], id="csv-cr-inside-line-kept"),
    pytest.param("\n\na b", ["a", "b"], id="csv-leading-empty-lines-skipped"),
    pytest.param("\r\na", ["a"], id="csv-leading-crlf-line-skipped"),
    pytest.param('"a\nb" c', ["a\nb", "c"], id="csv-newline-inside-quotes-kept"),
    pytest.param('"a\r\nb"', ["a\nb"], id="csv-crlf-inside-quotes-becomes-lf"),
    pytest.param('"a\n\nb"', ["a\n\nb"], id="csv-blank-line-inside-quotes-kept"),
    pytest.param('"a"\nb', ["a"], id="csv-quote-then-newline-ends-record"),
    pytest.param('a "b c"', ["a", "b c"], id="csv-quoted-field-after-unquoted"),
    pytest.param("é ü", ["é", "ü"], id="non-ascii"),
]


@pytest.mark.parametrize(("text", "expected"), SPLITS)
def test_split_like_go_csv(text: str, expected: list[str]) -> None:
    assert split_cmd_args(text) == expected


ERRORS = [
    pytest.param('a"b', f"parse error on line 1, column 1: {ERR_BARE_QUOTE}",
                 id="csv-ErrBareQuote-quote-inside-unquoted-field"),
    pytest.param('a b"', f"parse error on line 1, column 3: {ERR_BARE_QUOTE}",
                 id="csv-ErrBareQuote-column-is-rune-index"),
    pytest.param('"a"b', f"parse error on line 1, column 2: {ERR_QUOTE}",
                 id="csv-ErrQuote-closing-quote-not-followed-by-space"),
    pytest.param('"a" "b"c', f"parse error on line 1, column 6: {ERR_QUOTE}",
                 id="csv-ErrQuote-second-field"),
    pytest.param('"abc', f"record on line 1; parse error on line 2, column 0: {ERR_QUOTE}",
                 id="csv-ErrQuote-unterminated-quote"),
    pytest.param('x "a\nb', f"record on line 1; parse error on line 3, column 0: {ERR_QUOTE}",
                 id="csv-ErrQuote-unterminated-across-lines"),
    pytest.param("\n", "no arguments", id="csv-only-newline-is-io.EOF"),
    pytest.param("\r", "no arguments", id="csv-only-cr-is-io.EOF"),
    pytest.param("\n\r\n", "no arguments", id="csv-only-empty-lines-is-io.EOF"),
    pytest.param('"a"\rb', ERR_QUOTE, id="csv-ErrQuote-cr-after-closing-quote"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_errors_like_go_csv(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        split_cmd_args(text)


def go_quote(field: str) -> str:
    """Quote a field the way Go's csv.Writer would with Comma=' ' (empty fields quoted too)."""
    if field == "" or any(ch in field for ch in ' "\r\n') or field.startswith(" "):
        return '"' + field.replace('"', '""') + '"'
    return field


def always_quote(field: str) -> str:
    return '"' + field.replace('"', '""') + '"'


FIELDS = st.lists(st.text(st.characters(blacklist_characters="\n", codec="utf-8")), max_size=6)


@settings(deadline=None, max_examples=200)
@given(FIELDS)
def test_quoted_fields_round_trip(fields: list[str]) -> None:
    assert split_cmd_args(" ".join(always_quote(f) for f in fields)) == fields


@settings(deadline=None, max_examples=200)
@given(FIELDS)
def test_minimally_quoted_fields_round_trip(fields: list[str]) -> None:
    assert split_cmd_args(" ".join(go_quote(f) for f in fields)) == fields


@settings(deadline=None, max_examples=200)
@given(st.text(alphabet=st.sampled_from(['"', " ", "a", "\n", "\r", "'", "\\"]), max_size=12)
       | st.text())
def test_any_text_gives_list_or_value_error(text: str) -> None:
    try:
        fields = split_cmd_args(text)
    except ValueError:
        return
    assert isinstance(fields, list)
    assert all(isinstance(f, str) for f in fields)
    if text and "\n" not in text and '"' not in text:
        assert fields == text.removesuffix("\r").split(" ")
