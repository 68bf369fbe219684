"""The systemd units in systemd/ pass `systemd-analyze verify` and say what the issue asks."""

from __future__ import annotations

import os
import shutil
import subprocess
from configparser import ConfigParser
from pathlib import Path

import pytest
from util import ROOT

UNITS = ROOT / "systemd"
DROP_IN = UNITS / "postgresql.service.d" / "10-spiffe-helper.conf"
# The one complaint allowed: the helper is not installed at /usr/local/bin on this machine.
MISSING_BINARY = "Command /usr/local/bin/spiffe-helper is not executable: No such file"


@pytest.fixture(scope="module")
def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing in CI: install systemd")
        pytest.skip("SKIPPED LOUDLY: systemd-analyze is not installed, units not verified")
    return found


def verify(analyze: str, directory: Path, unit: str) -> list[str]:
    """stderr lines of `systemd-analyze verify`, minus the missing-binary one."""
    result = subprocess.run([analyze, "verify", f"./{unit}"], cwd=directory,
                            capture_output=True, text=True, timeout=30, check=False)
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    return [line for line in lines if MISSING_BINARY not in line]


def stage(tmp_path: Path) -> Path:
    """The units as installed in one directory; the template also as an instance."""
    for unit in ("spiffe-helper.service", "spiffe-helper@.service"):
        shutil.copy(UNITS / unit, tmp_path / unit)
    shutil.copy(UNITS / "spiffe-helper@.service", tmp_path / "spiffe-helper@test.service")
    # a stand-in postgresql.service with the example drop-in beside it
    (tmp_path / "postgresql.service").write_text("[Service]\nExecStart=/bin/true\n")
    (tmp_path / "postgresql.service.d").mkdir()
    shutil.copy(DROP_IN, tmp_path / "postgresql.service.d" / DROP_IN.name)
    # the per-daemon drop-ins of the template
    for directory in UNITS.glob("spiffe-helper@*.service.d"):
        shutil.copytree(directory, tmp_path / directory.name)
    return tmp_path


@pytest.mark.parametrize("unit", ["spiffe-helper.service", "spiffe-helper@test.service",
                                  "spiffe-helper@nginx.service",
                                  "spiffe-helper@postgresql.service", "postgresql.service"])
def test_systemd_analyze_verify_passes_on_every_unit(tmp_path, analyze, unit):
    assert verify(analyze, stage(tmp_path), unit) == []


def test_verify_would_catch_a_mistake(tmp_path, analyze):
    """The check above is not vacuous: an unknown key in the drop-in is reported."""
    directory = stage(tmp_path)
    drop_in = directory / "postgresql.service.d" / DROP_IN.name
    drop_in.write_text(drop_in.read_text() + "Requiress=nothing.service\n")
    assert any("Requiress" in line for line in verify(analyze, directory, "postgresql.service"))


def unit_file(name: str) -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


@pytest.mark.parametrize("name", ["spiffe-helper.service", "spiffe-helper@.service"])
def test_units_are_notify_reloadable_watchdogged_and_hardened(name):
    service = unit_file(name)["Service"]
    assert service["Type"] == "notify"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillMode"] == "mixed"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "PrivateTmp": "yes", "ProtectHome": "yes",
                       "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
                       "UMask": "0077"}.items():
        assert service[key] == value, key
    assert service["ReadWritePaths"].startswith("/var/lib/spiffe-helper")


def test_template_reads_one_config_per_instance():
    service = unit_file("spiffe-helper@.service")["Service"]
    assert service["ExecStart"].endswith("-config /etc/spiffe-helper/%i.conf")


def test_postgresql_drop_in_orders_the_database_after_its_helper():
    unit = ConfigParser(strict=False, interpolation=None)
    unit.read(DROP_IN)
    assert unit["Unit"]["Requires"] == "spiffe-helper@postgresql.service"
    assert unit["Unit"]["After"] == "spiffe-helper@postgresql.service"
