"""Workload API address parsing (pure, no I/O).

Accepted forms:
  * ``unix:///absolute/path`` (also ``unix:/absolute/path``, as Go's url.Parse reads it)
  * ``tcp://IP:port`` with an IPv4 address or a bracketed IPv6 address
  * a bare absolute path, read as a unix socket path (the Go helper's default form)

Paths in ``unix:`` URLs are percent-decoded, as Go and gRPC do; bare paths are taken
literally.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote_to_bytes

from helper.errors import AddressError

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(.*)", re.DOTALL)
_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DIGITS = re.compile(r"[0-9]+")
# Characters left unescaped when a path is written back as a URL.
_PATH_SAFE = "/!$&'()*+,;=:@-._~"
_MAX_SHOWN = 120


@dataclass(frozen=True)
class Address:
    """A parsed Workload API address."""

    scheme: Literal["unix", "tcp"]
    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def grpc_target(self) -> str:
        """The target string for grpc channels."""
        if self.scheme == "unix":
            return "unix://" + quote(self.path, safe=_PATH_SAFE)
        if ":" in self.host:
            return f"ipv6:[{self.host}]:{self.port}"
        return f"ipv4:{self.host}:{self.port}"

    def __str__(self) -> str:
        if self.scheme == "unix":
            return "unix://" + quote(self.path, safe=_PATH_SAFE)
        if ":" in self.host:
            return f"tcp://[{self.host}]:{self.port}"
        return f"tcp://{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """Parse a Workload API address; raise AddressError saying what is wrong."""
    _check_characters(text)
    if text.startswith("/"):
        return _unix_address(text, text)
    match = _SCHEME.fullmatch(text)
    if match is None:
        raise AddressError(
            f"{_shown(text)} is a relative path: use an absolute path or unix:///absolute/path"
        )
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme == "unix":
        return _parse_unix_url(text, rest)
    if scheme == "tcp":
        return _parse_tcp_url(text, rest)
    raise AddressError(
        f"{_shown(text)} has unknown scheme {scheme!r}: "
        "expected unix:///absolute/path, tcp://IP:port or an absolute path"
    )


def _shown(text: str) -> str:
    """The address quoted for an error message, shortened if very long."""
    if len(text) > _MAX_SHOWN:
        text = text[:_MAX_SHOWN] + "..."
    return repr(text)


def _check_characters(text: str) -> None:
    if text == "":
        raise AddressError("address is empty")
    if text != text.strip():
        raise AddressError(f"{_shown(text)} has leading or trailing white space")
    if _has_control_characters(text):
        raise AddressError(f"{_shown(text)} contains control characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise AddressError(f"{_shown(text)} is not valid text (lone surrogate)") from None


def _has_control_characters(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def _split_authority(text: str, rest: str) -> tuple[str, str]:
    """Split the part after ``scheme:`` into (authority, path); reject query and fragment."""
    if "?" in rest:
        raise AddressError(f"{_shown(text)} must not have a query (?...)")
    if "#" in rest:
        raise AddressError(f"{_shown(text)} must not have a fragment (#...)")
    if not rest.startswith("//"):
        return "", rest
    after = rest[2:]
    slash = after.find("/")
    if slash < 0:
        return after, ""
    return after[:slash], after[slash:]


def _parse_unix_url(text: str, rest: str) -> Address:
    if not rest.startswith("/"):
        raise AddressError(
            f"{_shown(text)} is not a valid unix address: write unix:///absolute/path"
        )
    authority, path = _split_authority(text, rest)
    if "@" in authority:
        raise AddressError(f"{_shown(text)} must not have user info")
    if authority:
        raise AddressError(
            f"{_shown(text)} has an authority ({authority!r}): "
            "write unix:///absolute/path with three slashes"
        )
    return _unix_address(text, _percent_decode(text, path))


def _percent_decode(text: str, path: str) -> str:
    if _PERCENT_ESCAPE.search(path):
        raise AddressError(f"{_shown(text)} has an invalid percent escape")
    try:
        decoded = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise AddressError(f"{_shown(text)} has percent escapes that are not UTF-8") from None
    if _has_control_characters(decoded):
        raise AddressError(f"{_shown(text)} encodes control characters in its path")
    return decoded


def _unix_address(text: str, path: str) -> Address:
    if not path:
        raise AddressError(f"{_shown(text)} has no socket path")
    if not path.startswith("/"):
        raise AddressError(f"{_shown(text)}: the socket path must be absolute")
    if path.endswith("/"):
        raise AddressError(f"{_shown(text)}: the socket path must not end with '/'")
    return Address(scheme="unix", path=path)


def _parse_tcp_url(text: str, rest: str) -> Address:
    if not rest.startswith("//"):
        raise AddressError(f"{_shown(text)} is not a valid tcp address: write tcp://IP:port")
    authority, path = _split_authority(text, rest)
    if "@" in authority:
        raise AddressError(f"{_shown(text)} must not have user info")
    if path:
        raise AddressError(f"{_shown(text)} must not have a path: write tcp://IP:port")
    host, port_text = _split_host_port(text, authority)
    return Address(scheme="tcp", host=_parse_ip(text, host), port=_parse_port(text, port_text))


def _split_host_port(text: str, authority: str) -> tuple[str, str]:
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise AddressError(f"{_shown(text)} has an unclosed '[' in its host")
        host, after = authority[1:close], authority[close + 1 :]
        if not after.startswith(":"):
            raise AddressError(f"{_shown(text)} has no port: write tcp://[IPv6]:port")
        if ":" not in host:
            raise AddressError(f"{_shown(text)}: only IPv6 addresses go in brackets")
        return host, after[1:]
    if authority.count(":") > 1:
        raise AddressError(f"{_shown(text)}: put an IPv6 address in brackets, tcp://[::1]:port")
    host, colon, port_text = authority.partition(":")
    if not colon:
        raise AddressError(f"{_shown(text)} has no port: write tcp://IP:port")
    return host, port_text


def _parse_ip(text: str, host: str) -> str:
    if not host:
        raise AddressError(f"{_shown(text)} has no host: write tcp://IP:port")
    if "%" in host:
        raise AddressError(f"{_shown(text)}: IPv6 zone identifiers are not supported")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise AddressError(
            f"{_shown(text)}: host {host!r} is not an IP address (host names are not allowed)"
        ) from None


def _parse_port(text: str, port_text: str) -> int:
    if not port_text:
        raise AddressError(f"{_shown(text)} has no port: write tcp://IP:port")
    if not _DIGITS.fullmatch(port_text) or len(port_text) > 5:
        raise AddressError(f"{_shown(text)}: port {port_text!r} is not a number in 1..65535")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise AddressError(f"{_shown(text)}: port {port} is out of range 1..65535")
    return port
