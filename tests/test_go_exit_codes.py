"""Exit codes and health where the Go helper's users depend on them (issue 12, items 12-13)."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from pathlib import Path

from util import BASE_CONF, HelperProcess, free_port, wait_for

CONF = BASE_CONF


def test_a_one_shot_run_stopped_by_sigterm_before_any_write_exits_1(tmp_path, certs):
    # as Go: an init container killed mid-start must not report success
    path = tmp_path / "helper.conf"
    path.write_text(CONF.format(socket=tmp_path / "nobody-home.sock", cert_dir=certs)
                    + "startup_timeout = 50\n")
    log = tmp_path / "helper.log"
    with HelperProcess("-config", str(path), "-daemon-mode=false", log=log) as helper:
        wait_for(lambda: "retrying" in helper.output(), what="first retry")
        helper.proc.send_signal(signal.SIGTERM)
        assert helper.proc.wait(10) == 1
    assert "SIGTERM" in helper.output()
    assert list(certs.iterdir()) == []


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except urllib.error.URLError:
        return 0, {}  # not listening yet


def test_a_hint_that_matches_no_svid_fails_liveness_and_names_the_hints(tmp_path, agent, certs):
    # as Go: x509_write_status "failed" and /live 503, so an orchestrator restarts the pod
    path: Path = tmp_path / "helper.conf"
    port = free_port()
    path.write_text(CONF.format(socket=agent.socket_path, cert_dir=certs)
                    + 'hint = "nobody"\n'
                    + "health_checks {\n  listener_enabled = true\n"
                    + f'  bind_address = "127.0.0.1"\n  bind_port = {port}\n}}\n')
    log = tmp_path / "helper.log"
    with HelperProcess("-config", str(path), log=log) as helper:
        url = f"http://127.0.0.1:{port}"
        _, body = wait_for(lambda: (r := get(url + "/live"))[0] == 503 and r,
                              what="liveness 503")
        assert body["health"]["file_write_statuses"]["x509_write_status"] == "failed"
        assert get(url + "/ready")[0] == 503
        line = next(line for line in helper.output().splitlines() if "nobody" in line)
        assert "hints offered" in line
    assert list(certs.iterdir()) == []


def test_a_jwt_hint_that_matches_no_token_names_the_hints_offered():
    import pytest

    from helper.errors import Refused
    from helper.identity.jwt import JWTSVID, select_jwt_svid

    def token(hint: str) -> JWTSVID:
        return JWTSVID(token="t", spiffe_id="spiffe://example.org/w", trust_domain="example.org",
                       audience=("a",), expiry=None, key_id="k", hint=hint)  # type: ignore[arg-type]

    with pytest.raises(Refused) as refused:
        select_jwt_svid([token("internal"), token("external")], "other")
    assert refused.value.rule == "hint_not_found"
    assert "hints offered: 'external', 'internal'" in refused.value.detail
