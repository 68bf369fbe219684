from __future__ import annotations

import pytest

from helper.errors import Refused
from helper.identity.spiffeid import SpiffeID, parse_spiffe_id, parse_trust_domain

VALID = [
    ("spiffe://example.org", "example.org", ""),
    ("spiffe://example.org/workload", "example.org", "/workload"),
    ("spiffe://a-b_c.9/ns/prod/sa/Web_Front-End.v2", "a-b_c.9", "/ns/prod/sa/Web_Front-End.v2"),
    ("spiffe://td/.../a..b/.x", "td", "/.../a..b/.x"),
    ("spiffe://1.2.3.4/x", "1.2.3.4", "/x"),
    ("spiffe://td/" + "a" * (2048 - len("spiffe://td/")), "td", "/" + "a" * 2036),
]

INVALID = [
    # (id, rule)
    ("", "scheme"),
    ("example.org/workload", "scheme"),
    ("SPIFFE://example.org/workload", "scheme"),
    ("Spiffe://example.org", "scheme"),
    ("https://example.org/workload", "scheme"),
    ("spiffe:example.org/workload", "scheme"),
    ("spiffe:/example.org/workload", "scheme"),
    (" spiffe://example.org", "scheme"),
    ("spiffe://", "trust_domain_not_empty"),
    ("spiffe:///workload", "trust_domain_not_empty"),
    ("spiffe://Example.org/workload", "trust_domain_chars"),
    ("spiffe://exa mple.org", "trust_domain_chars"),
    ("spiffe://exämple.org", "trust_domain_chars"),
    ("spiffe://example%2eorg", "trust_domain_chars"),
    ("spiffe://[::1]/x", "no_port"),
    ("spiffe://example.org:8443/workload", "no_port"),
    ("spiffe://example.org:/workload", "no_port"),
    ("spiffe://user@example.org/workload", "no_userinfo"),
    ("spiffe://user:pw@example.org/workload", "no_userinfo"),
    ("spiffe://example.org/workload?x=1", "no_query"),
    ("spiffe://example.org?x", "no_query"),
    ("spiffe://example.org/workload#frag", "no_fragment"),
    ("spiffe://example.org#", "no_fragment"),
    ("spiffe://example.org//workload", "path_segment_not_empty"),
    ("spiffe://example.org/a//b", "path_segment_not_empty"),
    ("spiffe://example.org/./workload", "path_segment_not_dot"),
    ("spiffe://example.org/a/../b", "path_segment_not_dot"),
    ("spiffe://example.org/..", "path_segment_not_dot"),
    ("spiffe://example.org/a%20b", "path_segment_chars"),
    ("spiffe://example.org/a b", "path_segment_chars"),
    ("spiffe://example.org/caf\u00e9", "path_segment_chars"),
    ("spiffe://example.org/a~b", "path_segment_chars"),
    ("spiffe://example.org/a:b", "path_segment_chars"),
    ("spiffe://example.org/", "no_trailing_slash"),
    ("spiffe://example.org/workload/", "no_trailing_slash"),
    ("spiffe://td/" + "a" * (2049 - len("spiffe://td/")), "max_length"),
    ("spiffe://td/" + "\u00e9" * 1100, "max_length"),
]


@pytest.mark.parametrize(("text", "trust_domain", "path"), VALID)
def test_valid_ids_parse(text: str, trust_domain: str, path: str) -> None:
    parsed = parse_spiffe_id(text)
    assert parsed == SpiffeID(trust_domain, path)
    assert str(parsed) == text


@pytest.mark.parametrize(("text", "rule"), INVALID)
def test_invalid_ids_name_the_broken_rule(text: str, rule: str) -> None:
    with pytest.raises(Refused) as info:
        parse_spiffe_id(text)
    assert info.value.rule == rule
    assert info.value.detail
    assert "\n" not in str(info.value)


def test_every_rule_has_an_invalid_case() -> None:
    rules = {
        "scheme",
        "trust_domain_not_empty",
        "trust_domain_chars",
        "no_port",
        "no_userinfo",
        "no_query",
        "no_fragment",
        "path_segment_not_empty",
        "path_segment_not_dot",
        "path_segment_chars",
        "no_trailing_slash",
        "max_length",
    }
    assert {rule for _, rule in INVALID} == rules


def test_long_id_is_cut_short_in_message() -> None:
    with pytest.raises(Refused) as info:
        parse_spiffe_id("spiffe://example.org/" + "x" * 1000 + "/")
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("example.org", "example.org"),
        ("spiffe://example.org", "example.org"),
        ("spiffe://example.org/some/path", "example.org"),
        ("td_1-x.y", "td_1-x.y"),
    ],
)
def test_trust_domain_in_either_form(text: str, name: str) -> None:
    assert parse_trust_domain(text) == name


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", "trust_domain_not_empty"),
        ("Example.org", "trust_domain_chars"),
        ("example.org/path", "trust_domain_chars"),
        ("example.org:443", "no_port"),
        ("user@example.org", "no_userinfo"),
        ("SPIFFE://example.org", "scheme"),
        ("https://example.org", "scheme"),
        ("spiffe://example.org/", "no_trailing_slash"),
        ("spiffe://", "trust_domain_not_empty"),
        ("a" * 2049, "max_length"),
    ],
)
def test_bad_trust_domains(text: str, rule: str) -> None:
    with pytest.raises(Refused) as info:
        parse_trust_domain(text)
    assert info.value.rule == rule
