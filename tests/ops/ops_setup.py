"""Helpers shared by the end-to-end operations tests: the helper's config file, HTTP reads."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from util import (
    HelperProcess,
    free_port,
)

from helper.devagent import DevAgentThread

CONF = """\
agent_address = "{socket}"
cert_dir = "{cert_dir}"
svid_file_name = "{svid}"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
cert_file_mode = {cert_mode}
{extra}
health_checks {{
  listener_enabled = true
  bind_address = "127.0.0.1"
  bind_port = {port}
}}
"""


# --- fixtures and small helpers -------------------------------------------------------------


class Setup:
    """One helper's config file, written and rewritten by the test."""

    def __init__(self, tmp_path: Path, agent: DevAgentThread, certs: Path) -> None:
        self.path = tmp_path / "helper.conf"
        self.agent_socket = agent.socket_path
        self.certs = certs
        self.port = free_port()
        self.write()

    def text(self, *, svid: str = "svid.pem", cert_mode: str = "0644", extra: str = "",
             socket_path: str | None = None) -> str:
        return CONF.format(socket=socket_path or self.agent_socket, cert_dir=self.certs,
                           svid=svid, cert_mode=cert_mode, extra=extra, port=self.port)

    def write(self, **options: str) -> None:
        self.path.write_text(self.text(**options))

    def replace(self, **options: str) -> None:
        """Write a new version and rename it into place, as editors and deploy tools do."""
        temp = self.path.with_name(".helper.conf.new")
        temp.write_text(self.text(**options))
        os.replace(temp, self.path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def http(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def http_or_none(url: str) -> tuple[int, dict[str, str], bytes] | None:
    try:
        return http(url)
    except (urllib.error.URLError, ConnectionError):
        return None


def metric(setup: Setup, sample: str) -> float | None:
    answer = http_or_none(setup.url("/metrics"))
    if answer is None:
        return None
    for line in answer[2].decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return None


def lines_with(helper: HelperProcess, text: str) -> list[str]:
    return [line for line in helper.output().splitlines() if text in line]


def start(setup: Setup, tmp_path: Path, *args: str, env: dict[str, str] | None = None,
          log: str = "helper.log") -> HelperProcess:
    return HelperProcess("-config", str(setup.path), *args, env=env, log=tmp_path / log)
