"""pyhcl's parser without rebuilding its LALR tables at every start.

pyhcl (0.4.x) runs PLY's LALR table generator each time a parser object is created:
about 100 ms, the largest single cost of a one-shot run. `helper/config/_hcl_parsetab.py` holds
the tables for pyhcl's grammar together with PLY's signature of that grammar.
`lr_parser(obj)` builds the parser from them when the grammar of `obj` (an `HclParser`)
has that signature, and falls back to PLY's generator otherwise: a pyhcl with another
grammar keeps working, only slower.

`python tools/gen_hcl_tables.py` regenerates the tables; tests/config/test_hcl_tables.py fails
when they are stale.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

from hcl.ply import yacc

Table = dict[int, dict[str, int]]


def _reflect(parser: object) -> Any:
    """PLY's view of `parser`'s grammar (what `yacc.yacc(module=parser)` reads)."""
    pdict = {name: getattr(parser, name) for name in dir(parser)}
    if "__file__" not in pdict:
        pdict["__file__"] = sys.modules[pdict["__module__"]].__file__
    info = yacc.ParserReflect(pdict, log=yacc.NullLogger())
    info.get_all()
    return info


def _grammar(info: Any) -> Any:
    """The grammar's productions, numbered as PLY numbers them."""
    # The checks yacc() runs, minus validate_modules (a source-file scan that only warns).
    info.validate_start()
    info.validate_error_func()
    info.validate_tokens()
    info.validate_precedence()
    info.validate_pfunctions()
    if info.error:
        raise yacc.YaccError("Unable to build parser")
    grammar = yacc.Grammar(info.tokens)
    for term, assoc, level in info.preclist:
        grammar.set_precedence(term, assoc, level)
    for funcname, (file, line, prodname, syms) in info.grammar:
        grammar.add_production(prodname, syms, funcname, file, line)
    grammar.set_start(info.start)
    return grammar


def generate(parser: object) -> tuple[str, Table, Table]:
    """(signature, action table, goto table) of `parser`'s grammar, built by PLY."""
    info = _reflect(parser)
    table = yacc.LRTable(_grammar(info))
    return info.signature(), table.lr_action, table.lr_goto


def lr_parser(parser: object) -> Any:
    """A PLY `LRParser` for `parser`, from the stored tables when they fit its grammar."""
    from helper.config import _hcl_parsetab as stored

    info = _reflect(parser)
    if info.signature() != stored.SIGNATURE:
        return yacc.yacc(module=parser, debug=False, optimize=1)
    grammar = _grammar(info)
    table = SimpleNamespace(lr_productions=grammar.Productions, lr_action=stored.ACTION,
                            lr_goto=stored.GOTO)
    for production in grammar.Productions:
        production.bind(info.pdict)
    return yacc.LRParser(table, info.error_func)
