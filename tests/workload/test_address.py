"""Workload API address parsing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helper.errors import AddressError, ConfigError
from helper.workload.address import Address, parse_address

VALID = [
    pytest.param("/tmp/spire-agent/public/api.sock",
                 Address("unix", path="/tmp/spire-agent/public/api.sock"),
                 "unix:///tmp/spire-agent/public/api.sock", "unix:///tmp/spire-agent/public/api.sock",
                 id="bare-absolute-path-is-unix"),
    pytest.param("unix:///run/agent.sock", Address("unix", path="/run/agent.sock"),
                 "unix:///run/agent.sock", "unix:///run/agent.sock", id="unix-url"),
    pytest.param("UNIX:///run/agent.sock", Address("unix", path="/run/agent.sock"),
                 "unix:///run/agent.sock", "unix:///run/agent.sock",
                 id="scheme-is-case-insensitive"),
    pytest.param("unix:/run/agent.sock", Address("unix", path="/run/agent.sock"),
                 "unix:///run/agent.sock", "unix:///run/agent.sock",
                 id="unix-single-slash-as-go-url-parse"),
    pytest.param("unix:///tmp/a%20b", Address("unix", path="/tmp/a b"),
                 "unix:///tmp/a%20b", "unix:///tmp/a%20b", id="unix-url-percent-decoded"),
    pytest.param("/tmp/a%20b?c", Address("unix", path="/tmp/a%20b?c"),
                 "unix:///tmp/a%2520b%3Fc", "unix:///tmp/a%2520b%3Fc",
                 id="bare-path-taken-literally"),
    pytest.param("tcp://127.0.0.1:8081", Address("tcp", host="127.0.0.1", port=8081),
                 "tcp://127.0.0.1:8081", "ipv4:127.0.0.1:8081", id="tcp-ipv4"),
    pytest.param("tcp://[::1]:8081", Address("tcp", host="::1", port=8081),
                 "tcp://[::1]:8081", "ipv6:[::1]:8081", id="tcp-ipv6"),
    pytest.param("tcp://[2001:DB8:0::1]:1", Address("tcp", host="2001:db8::1", port=1),
                 "tcp://[2001:db8::1]:1", "ipv6:[2001:db8::1]:1", id="tcp-ipv6-canonical"),
    pytest.param("tcp://10.0.0.1:65535", Address("tcp", host="10.0.0.1", port=65535),
                 "tcp://10.0.0.1:65535", "ipv4:10.0.0.1:65535", id="tcp-max-port"),
]


@pytest.mark.parametrize(("text", "expected", "canonical", "target"), VALID)
def test_valid_addresses(text: str, expected: Address, canonical: str, target: str) -> None:
    address = parse_address(text)
    assert address == expected
    assert str(address) == canonical
    assert address.grpc_target == target
    assert parse_address(str(address)) == address


INVALID = [
    pytest.param("", "empty", id="empty"),
    pytest.param(" /tmp/a.sock", "white space", id="leading-space"),
    pytest.param("/tmp/a\n.sock", "control", id="control-character"),
    pytest.param("agent.sock", "relative path", id="relative-path"),
    pytest.param("./agent.sock", "relative path", id="dot-relative-path"),
    pytest.param("unix://host/path", "authority", id="unix-authority"),
    pytest.param("unix://user@/path", "user info", id="unix-user-info"),
    pytest.param("unix:relative/path", "not a valid unix address", id="unix-opaque"),
    pytest.param("unix://", "no socket path", id="unix-no-path"),
    pytest.param("unix:///", "must not end with '/'", id="unix-root"),
    pytest.param("unix:///a.sock?x=1", "query", id="unix-query"),
    pytest.param("unix:///a.sock#frag", "fragment", id="unix-fragment"),
    pytest.param("unix:///a%zz", "percent escape", id="bad-percent-escape"),
    pytest.param("unix:///a%00b", "control characters", id="percent-encoded-nul"),
    pytest.param("unix:///a%ff", "not UTF-8", id="percent-escape-not-utf8"),
    pytest.param("tcp://localhost:8081", "not an IP address", id="tcp-hostname"),
    pytest.param("tcp://example.org:8081", "not an IP address", id="tcp-dns-name"),
    pytest.param("tcp://127.0.0.1", "no port", id="tcp-missing-port"),
    pytest.param("tcp://127.0.0.1:", "no port", id="tcp-empty-port"),
    pytest.param("tcp://127.0.0.1:0", "out of range", id="tcp-port-zero"),
    pytest.param("tcp://127.0.0.1:65536", "out of range", id="tcp-port-too-big"),
    pytest.param("tcp://127.0.0.1:80x", "not a number", id="tcp-port-not-number"),
    pytest.param("tcp://127.0.0.1:-1", "not a number", id="tcp-port-negative"),
    pytest.param("tcp://127.0.0.1:8081/path", "must not have a path", id="tcp-path"),
    pytest.param("tcp://127.0.0.1:8081/", "must not have a path", id="tcp-slash-path"),
    pytest.param("tcp://user@127.0.0.1:8081", "user info", id="tcp-user-info"),
    pytest.param("tcp://127.0.0.1:8081?x", "query", id="tcp-query"),
    pytest.param("tcp://127.0.0.1:8081#x", "fragment", id="tcp-fragment"),
    pytest.param("tcp:127.0.0.1:8081", "tcp://IP:port", id="tcp-opaque"),
    pytest.param("tcp://::1:8081", "brackets", id="tcp-ipv6-without-brackets"),
    pytest.param("tcp://[::1]", "no port", id="tcp-ipv6-no-port"),
    pytest.param("tcp://[::1:8081", "unclosed", id="tcp-ipv6-unclosed"),
    pytest.param("tcp://[127.0.0.1]:8081", "only IPv6", id="tcp-ipv4-in-brackets"),
    pytest.param("tcp://[fe80::1%eth0]:8081", "zone", id="tcp-ipv6-zone"),
    pytest.param("tcp://1.2.3:8081", "not an IP address", id="tcp-short-ipv4"),
    pytest.param("tcp://:8081", "no host", id="tcp-no-host"),
    pytest.param("http://127.0.0.1:8081", "unknown scheme", id="unknown-scheme"),
    pytest.param("localhost:8081", "unknown scheme", id="host-port-without-scheme"),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_addresses(text: str, message: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_address(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_error_message_shortens_long_input() -> None:
    with pytest.raises(AddressError) as info:
        parse_address("x" * 10_000)
    assert len(str(info.value)) < 300


@settings(deadline=None, max_examples=200)
@given(st.text())
def test_any_text_gives_address_or_address_error(text: str) -> None:
    try:
        address = parse_address(text)
    except AddressError:
        return
    assert parse_address(str(address)) == address


URL_PIECES = st.sampled_from([
    "unix:", "tcp:", "//", "/", "[", "]", ":", "@", "?", "#", "%", "%2", "%20", "::1",
    "127.0.0.1", "8081", "0", "65536", "a", "é", " ", ".",
])


@settings(deadline=None, max_examples=200)
@given(st.lists(URL_PIECES, max_size=8).map("".join))
def test_url_like_text_gives_address_or_address_error(text: str) -> None:
    try:
        address = parse_address(text)
    except AddressError:
        return
    assert address.scheme in ("unix", "tcp")
    assert parse_address(str(address)) == address
