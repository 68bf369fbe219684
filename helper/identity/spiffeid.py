"""SPIFFE ID parsing: one small check per rule of the SPIFFE ID specification.

Every check raises `Refused(rule, detail)` where `rule` is the check's name without the
``check_`` prefix. Nothing in here does I/O.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass

from helper.errors import Refused

SCHEME_PREFIX = "spiffe://"
MAX_ID_BYTES = 2048
TRUST_DOMAIN_CHARS = frozenset(string.ascii_lowercase + string.digits + ".-_")
PATH_SEGMENT_CHARS = frozenset(string.ascii_letters + string.digits + ".-_")
_SHOWN_CHARS = 80


@dataclass(frozen=True)
class SpiffeID:
    """A valid SPIFFE ID: `trust_domain` is the name, `path` is "" or starts with "/"."""

    trust_domain: str
    path: str = ""

    def __str__(self) -> str:
        return f"{SCHEME_PREFIX}{self.trust_domain}{self.path}"


def shown(text: str) -> str:
    """`text` quoted for an error message, cut short when long."""
    if len(text) > _SHOWN_CHARS:
        return repr(text[:_SHOWN_CHARS]) + "..."
    return repr(text)


def offered_hints(hints: Iterable[str]) -> str:
    """The distinct non-empty hints, for a log line: "'a', 'b'" or "none"."""
    offered = sorted({hint for hint in hints if hint})
    return ", ".join(shown(hint) for hint in offered) if offered else "none"


def check_max_length(text: str) -> None:
    """The whole ID is at most 2048 bytes (UTF-8)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        raise Refused("max_length", f"spiffe id is {size} bytes, at most {MAX_ID_BYTES} allowed")


def check_scheme(text: str) -> None:
    """The ID starts with exactly ``spiffe://`` (lowercase scheme, with an authority)."""
    if not text.startswith(SCHEME_PREFIX):
        raise Refused("scheme", f"{shown(text)} does not start with {SCHEME_PREFIX!r}")


def check_no_query(text: str) -> None:
    """No ``?`` anywhere: SPIFFE IDs carry no query."""
    if "?" in text:
        raise Refused("no_query", f"{shown(text)} has a query")


def check_no_fragment(text: str) -> None:
    """No ``#`` anywhere: SPIFFE IDs carry no fragment."""
    if "#" in text:
        raise Refused("no_fragment", f"{shown(text)} has a fragment")


def check_no_userinfo(authority: str) -> None:
    """The authority has no ``user@`` part."""
    if "@" in authority:
        raise Refused("no_userinfo", f"trust domain {shown(authority)} has user info")


def check_no_port(authority: str) -> None:
    """The authority has no ``:port`` part."""
    if ":" in authority:
        raise Refused("no_port", f"trust domain {shown(authority)} has a port")


def check_trust_domain_not_empty(authority: str) -> None:
    """The trust domain name is not empty."""
    if not authority:
        raise Refused("trust_domain_not_empty", "trust domain is empty")


def check_trust_domain_chars(authority: str) -> None:
    """The trust domain holds only lowercase ``a-z``, ``0-9``, ``.``, ``-`` and ``_``."""
    bad = sorted({c for c in authority if c not in TRUST_DOMAIN_CHARS})
    if bad:
        raise Refused(
            "trust_domain_chars",
            f"trust domain {shown(authority)} has characters outside a-z 0-9 . - _: "
            f"{shown(''.join(bad))}",
        )


def check_no_trailing_slash(path: str) -> None:
    """The path does not end with ``/``."""
    if path.endswith("/"):
        raise Refused("no_trailing_slash", f"path {shown(path)} ends with '/'")


def check_path_segment_not_empty(segment: str, path: str) -> None:
    """No path segment is empty (no ``//``)."""
    if not segment:
        raise Refused("path_segment_not_empty", f"path {shown(path)} has an empty segment")


def check_path_segment_not_dot(segment: str, path: str) -> None:
    """No path segment is ``.`` or ``..``."""
    if segment in (".", ".."):
        raise Refused("path_segment_not_dot", f"path {shown(path)} has a {segment!r} segment")


def check_path_segment_chars(segment: str, path: str) -> None:
    """Path segments hold only ``A-Z``, ``a-z``, ``0-9``, ``.``, ``-`` and ``_``."""
    bad = sorted({c for c in segment if c not in PATH_SEGMENT_CHARS})
    if bad:
        raise Refused(
            "path_segment_chars",
            f"path {shown(path)} has characters outside A-Z a-z 0-9 . - _: {shown(''.join(bad))}",
        )


def check_trust_domain(authority: str) -> None:
    """Every rule on the trust domain part."""
    check_no_userinfo(authority)
    check_no_port(authority)
    check_trust_domain_not_empty(authority)
    check_trust_domain_chars(authority)


def check_path(path: str) -> None:
    """Every rule on the path part ("" or starting with "/")."""
    if not path:
        return
    check_no_trailing_slash(path)
    for segment in path[1:].split("/"):
        check_path_segment_not_empty(segment, path)
        check_path_segment_not_dot(segment, path)
        check_path_segment_chars(segment, path)


def parse_spiffe_id(text: str) -> SpiffeID:
    """Parse `text` as a SPIFFE ID; raises `Refused` naming the first rule it breaks."""
    check_max_length(text)
    check_scheme(text)
    check_no_query(text)
    check_no_fragment(text)
    rest = text[len(SCHEME_PREFIX) :]
    authority, slash, tail = rest.partition("/")
    path = slash + tail
    check_trust_domain(authority)
    check_path(path)
    return SpiffeID(trust_domain=authority, path=path)


def parse_trust_domain(text: str) -> str:
    """The trust domain name of ``example.org`` or of a SPIFFE ID such as ``spiffe://example.org``.

    Like go-spiffe's TrustDomainFromString, a text containing ``:/`` is parsed as a
    SPIFFE ID (a path is allowed) and its trust domain returned.
    """
    if ":/" in text:
        return parse_spiffe_id(text).trust_domain
    check_max_length(text)
    check_trust_domain(text)
    return text
