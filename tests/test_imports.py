"""The one-shot path imports only what it needs (README "Performance").

Runs the real CLI with `python -X importtime` against the dev-agent and reads which
modules were imported. Nothing here is timed.
"""

from __future__ import annotations

import re
import subprocess
import sys

# Modules the one-shot run must not load: daemon-only features, test and dev tooling.
NOT_ON_THE_ONE_SHOT_PATH = ("watchdog", "psutil", "http.server", "helper.devagent",
                            "hypothesis", "tomllib")

_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", re.MULTILINE)


def imported_modules(stderr: str) -> set[str]:
    return set(_IMPORTED.findall(stderr))


def test_one_shot_imports_no_daemon_or_dev_modules(tmp_path, agent):
    certs = tmp_path / "certs"
    certs.mkdir()
    config = tmp_path / "helper.conf"
    config.write_text(f'agent_address = "{agent.socket_path}"\ncert_dir = "{certs}"\n'
                      'svid_file_name = "svid.pem"\nsvid_key_file_name = "key.pem"\n'
                      'svid_bundle_file_name = "bundle.pem"\n')
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "helper", "-config",
                           str(config), "-daemon-mode=false"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert (certs / "key.pem").is_file()
    modules = imported_modules(done.stderr)
    assert "helper.app" in modules  # the parse found the run's imports
    loaded = sorted(m for m in modules for bad in NOT_ON_THE_ONE_SHOT_PATH
                    if m == bad or m.startswith(bad + "."))
    assert loaded == []
