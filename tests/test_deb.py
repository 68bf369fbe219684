"""The Debian package (issue 16, item 1), built, installed, used and purged for real.

`tools/build-deb` builds it; lintian passes (its findings are fixed, or overridden in the
package with the reason next to each); `dpkg -i` installs it; `spiffe-helper -version`
and the demo run from /usr/bin; `systemd-analyze verify` passes on the installed units;
`dpkg --purge` leaves nothing of it behind.

It installs a package system-wide, so it runs only where asked to: .ci/run sets
SPIFFE_HELPER_TEST_DEB=1 on its CI machine (root, dpkg, lintian, systemd, network or
pip's cache for the dependencies' wheels).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest
from util import ROOT

from helper import __version__

pytestmark = [
    pytest.mark.timeout(1500),
    pytest.mark.skipif(os.environ.get("SPIFFE_HELPER_TEST_DEB") != "1",
                       reason="installs a package system-wide: run by .ci/run "
                              "(SPIFFE_HELPER_TEST_DEB=1, as root)"),
]
PACKAGE = "spiffe-helper"
UNIT_DIR = Path("/lib/systemd/system")
OWNED = [Path("/opt/spiffe-helper"), Path("/usr/bin/spiffe-helper"), Path("/etc/spiffe-helper"),
         Path("/usr/share/doc/spiffe-helper"), Path("/usr/share/man/man1/spiffe-helper.1.gz"),
         Path("/usr/share/lintian/overrides/spiffe-helper"), Path("/var/lib/spiffe-helper")]


def run(*cmd: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def installed() -> bool:
    return run("dpkg-query", "-W", "-f=${Status}", PACKAGE).stdout.startswith("install ok")


def leftovers() -> list[str]:
    found = [str(p) for p in OWNED if p.exists() or p.is_symlink()]
    found += [str(p) for p in UNIT_DIR.glob("spiffe-helper*")]
    found += [str(p) for p in Path("/etc/systemd/system").rglob("spiffe-helper*")]
    return found


def user_exists() -> bool:
    try:
        pwd.getpwnam(PACKAGE)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    if os.geteuid() != 0:
        pytest.fail("the package test needs root (dpkg -i)")
    for tool in ("dpkg-deb", "lintian", "systemd-analyze"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (apt-get install dpkg-dev lintian systemd)")
    if installed() or leftovers():
        pytest.fail(f"{PACKAGE} is already on this machine: {leftovers()}")
    dist = tmp_path_factory.mktemp("dist")
    result = subprocess.run([str(ROOT / "tools" / "build-deb")], env={**os.environ,
                            "DIST": str(dist)}, capture_output=True, text=True, timeout=1200,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    arch = run("dpkg", "--print-architecture").stdout.strip()
    path = dist / f"{PACKAGE}_{__version__}_{arch}.deb"
    assert result.stdout.strip().splitlines()[-1] == str(path)
    return path


def test_lintian_finds_nothing_that_is_not_overridden_with_a_reason(deb):
    result = run("lintian", "--fail-on", "error,warning", str(deb), timeout=900)
    findings = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert result.returncode == 0, result.stdout + result.stderr
    assert findings == []


def test_install_run_verify_and_purge_leave_nothing(deb, tmp_path):
    user_before = user_exists()
    try:
        result = run("dpkg", "-i", str(deb))
        assert result.returncode == 0, result.stdout + result.stderr
        assert installed()

        version = run("/usr/bin/spiffe-helper", "-version", cwd=tmp_path)
        assert version.returncode == 0, version.stderr
        assert version.stdout.startswith(f"spiffe-helper {__version__}\n")
        system_python = run("/usr/bin/python3", "-c",
                            "import platform; print(platform.python_version())").stdout.strip()
        assert f"Python {system_python}\n" in version.stdout  # the system's python3
        where = run("/opt/spiffe-helper/bin/python3", "-c",
                    "import helper; print(helper.__file__)", cwd=tmp_path)
        assert where.stdout.startswith("/opt/spiffe-helper/lib/"), where.stdout + where.stderr

        demo = run("/usr/bin/spiffe-helper", "demo", "-dir", str(tmp_path / "demo"),
                   cwd=tmp_path, timeout=120)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "rotation 2:" in demo.stdout

        units = sorted(p.name for p in UNIT_DIR.glob("spiffe-helper*"))
        assert units == ["spiffe-helper.service", "spiffe-helper@.service"]
        for unit in ("spiffe-helper.service", "spiffe-helper@test.service"):
            verify = run("systemd-analyze", "verify", unit, cwd=tmp_path)
            assert verify.returncode == 0, verify.stdout + verify.stderr
            assert (verify.stdout + verify.stderr).strip() == "", unit
        unit_text = (UNIT_DIR / "spiffe-helper.service").read_text()
        assert "ExecStart=/usr/bin/spiffe-helper " in unit_text

        conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", PACKAGE).stdout
        assert "/etc/spiffe-helper/helper.conf" in conffiles
        # the example config is all comments: check-config says what is missing
        check = run("/usr/bin/spiffe-helper", "check-config", "-config",
                    "/etc/spiffe-helper/helper.conf", cwd=tmp_path)
        assert check.returncode == 2
        assert len(check.stderr.strip().splitlines()) == 1
        man = run("man", "-P", "cat", "spiffe-helper") if shutil.which("man") else None
        if man is not None and man.returncode == 0:
            assert "check-config" in man.stdout
        # units that run as spiffe-helper get the user; others do not create one
        needs_user = "User=spiffe-helper" in unit_text or "Group=spiffe-helper" in unit_text
        assert user_exists() == (needs_user or user_before)
    finally:
        purge = run("dpkg", "--purge", PACKAGE)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert not installed()
    assert leftovers() == []
    assert user_exists() == user_before
    assert run("dpkg-query", "-W", PACKAGE).returncode != 0  # not even known to dpkg
