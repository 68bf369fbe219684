"""The stored LALR tables of pyhcl's grammar
(helper/config/_hcl_parsetab.py, helper/config/hcl_tables.py)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest
from hcl.ply import yacc
from util import ROOT

from helper.config import _hcl_parsetab, hcl_tables
from helper.config.hcl import _GoLikeHclParser

SAMPLES = [
    "",
    'agent_address = "/tmp/agent.sock"\ncert_dir = "certs"\ncert_file_mode = 420\n',
    "# comment\n// another\n/* block */\ndaemon_mode = false\nbind_port = 8081\n",
    'health_checks {\n  listener_enabled = true\n  liveness_path = "/live"\n}\n',
    'jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "a.token"}]\n',
    'jwt_svids { jwt_audience = "a"\n jwt_svid_file_name = "a" }\n'
    'jwt_svids { jwt_audience = "b"\n jwt_svid_file_name = "b" }\n',
    'list = ["x", "y", 1, 2.5, true]\nnested "name" { key = "v" }\n',
    "x = <<EOF\nheredoc text\nEOF\n",
]
BROKEN = ['key = "unterminated\n', "= 1\n", "a = [1, \n", "a { b = 1\n"]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_hcl_tables",
                                                  ROOT / "tools" / "gen_hcl_tables.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ply_built_parser() -> object:
    """The parser exactly as pyhcl builds it: PLY's table generator at run time."""
    parser = _GoLikeHclParser.__new__(_GoLikeHclParser)
    parser.yacc = yacc.yacc(module=parser, debug=False, optimize=1)
    return parser


def outcome(parser: object, text: str) -> object:
    try:
        return parser.parse(text)  # type: ignore[attr-defined]
    except ValueError as exc:
        return ("error", str(exc))


def test_stored_tables_are_those_of_the_installed_pyhcl():
    stored = (ROOT / "helper" / "config" / "_hcl_parsetab.py").read_text()
    assert stored == load_generator().render(), "run: python tools/gen_hcl_tables.py"


def test_the_grammar_signature_matches_so_the_stored_tables_are_used():
    parser = _GoLikeHclParser()
    signature, action, goto = hcl_tables.generate(parser)
    assert signature == _hcl_parsetab.SIGNATURE
    assert parser.yacc.action is _hcl_parsetab.ACTION
    assert (action, goto) == (_hcl_parsetab.ACTION, _hcl_parsetab.GOTO)


@pytest.mark.parametrize("text", SAMPLES + BROKEN)
def test_stored_tables_parse_exactly_as_plys_generated_ones(text):
    assert outcome(_GoLikeHclParser(), text) == outcome(ply_built_parser(), text)


def test_a_different_grammar_falls_back_to_plys_generator(monkeypatch):
    monkeypatch.setattr(_hcl_parsetab, "SIGNATURE", "some other grammar")
    parser = _GoLikeHclParser()
    assert parser.yacc.action is not _hcl_parsetab.ACTION
    assert parser.parse('a = "b"\n') == {"a": "b"}
