"""Fail fast where waiting cannot help (issue 16, item 4), through the real CLI.

A one-shot run whose cert_dir is on a read-only or full file system exits 1 at once,
naming the error, instead of retrying until startup_timeout; "previous files left in
place" is said only when there were previous files; check-config proves every output
directory writable by creating and removing a file there.

The read-only and full file systems are real tmpfs mounts, made in a private mount
namespace (`unshare --mount`, root needed) so nothing leaks to the host.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helper.errors import WriteError
from helper.outputs import preflight

STARTUP_TIMEOUT = 40  # what the helper would wait before this change


def conf(tmp_path: Path, agent, certs: Path, extra: str = "") -> Path:
    path = tmp_path / "helper.conf"
    path.write_text(f'agent_address = "{agent.socket_path}"\ncert_dir = "{certs}"\n'
                    'svid_file_name = "svid.pem"\nsvid_key_file_name = "svid_key.pem"\n'
                    'svid_bundle_file_name = "svid_bundle.pem"\n'
                    f'daemon_mode = false\nstartup_timeout = {STARTUP_TIMEOUT}\n' + extra)
    return path


@pytest.fixture(scope="module")
def mount_ns():
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for private tmpfs mounts")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"unshare --mount not permitted: {probe.stderr.decode().strip()}")


def in_mount_ns(setup: str, *args: str, timeout: float = 50) -> subprocess.CompletedProcess:
    """Run the helper CLI after the shell `setup` in a private mount namespace."""
    script = f'set -e\n{setup}\nexec "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           script, "sh", sys.executable, "-m", "helper", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_one_shot_on_a_read_only_cert_dir_exits_1_at_once(mount_ns, tmp_path, agent, certs):
    path = conf(tmp_path, agent, certs)
    start = time.monotonic()
    result = in_mount_ns(f"mount -t tmpfs -o ro,size=1m none {certs}", "-config", str(path))
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stderr
    assert elapsed < STARTUP_TIMEOUT / 2, elapsed
    assert "Read-only file system (EROFS)" in result.stderr
    assert "giving up at once" in result.stderr
    assert "startup_timeout" not in result.stderr
    # nothing was there before: no talk of previous files
    assert "previous files left in place" not in result.stderr


def test_previous_files_are_mentioned_only_when_there_were_some(mount_ns, tmp_path, agent,
                                                                certs):
    path = conf(tmp_path, agent, certs)
    setup = (f"mount -t tmpfs -o size=1m none {certs}\n"
             f"echo old > {certs}/svid.pem\n"
             f"mount -o remount,ro {certs}")
    result = in_mount_ns(setup, "-config", str(path))
    assert result.returncode == 1, result.stderr
    assert "previous files left in place" in result.stderr
    assert "Read-only file system (EROFS)" in result.stderr


def test_one_shot_on_a_full_file_system_exits_1_at_once(mount_ns, tmp_path, agent, certs):
    path = conf(tmp_path, agent, certs)
    setup = (f"mount -t tmpfs -o size=4k none {certs}\n"
             f"dd if=/dev/zero of={certs}/filler bs=4096 count=4 2>/dev/null || true")
    start = time.monotonic()
    result = in_mount_ns(setup, "-config", str(path))
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - start < STARTUP_TIMEOUT / 2
    assert "No space left on device (ENOSPC)" in result.stderr


def test_check_config_finds_a_cert_dir_it_cannot_write(mount_ns, tmp_path, agent, certs):
    path = conf(tmp_path, agent, certs)
    result = in_mount_ns(f"mount -t tmpfs -o ro,size=1m none {certs}",
                         "check-config", "-config", str(path))
    assert result.returncode == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert f"cert_dir: {certs} is not writable by root (uid 0)" in line
    assert "(EROFS)" in line
    assert result.stdout == ""


def test_check_config_checks_every_output_directory_and_leaves_nothing(
        mount_ns, tmp_path, agent, certs):
    jwt_dir = certs / "jwt"  # file names are relative to cert_dir, as in Go
    jwt_dir.mkdir()
    path = conf(tmp_path, agent, certs, extra=(
        'jwt_svids = [{ jwt_audience = "db", jwt_svid_file_name = "jwt/token" }]\n'))
    ok = in_mount_ns("true", "check-config", "-config", str(path))
    assert ok.returncode == 0, ok.stderr
    assert list(certs.iterdir()) == [jwt_dir]
    assert list(jwt_dir.iterdir()) == []
    result = in_mount_ns(f"mount -t tmpfs -o ro,size=1m none {jwt_dir}",
                         "check-config", "-config", str(path))
    assert result.returncode == 2
    assert f"jwt_svids[0].jwt_svid_file_name: {jwt_dir} is not writable" in result.stderr
    assert "cert_dir:" not in result.stderr
    jwt_dir.rmdir()  # a directory that does not exist is found too
    result = in_mount_ns("true", "check-config", "-config", str(path))
    assert result.returncode == 2
    assert f"{jwt_dir} is not writable by root (uid 0): No such file or directory" in \
        result.stderr


@pytest.mark.parametrize(("code", "heals"), [(errno.EROFS, False), (errno.EACCES, False),
                                             (errno.ENOSPC, False), (errno.ENOENT, False),
                                             (errno.EIO, True), (None, True)])
def test_which_write_errors_cannot_heal(code, heals):
    assert preflight.cannot_heal(WriteError("x", errno=code)) is not heals


def one_shot_exits_1_at_once(tmp_path, agent, certs, outputs: str,
                             ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A one-shot run writing `outputs` under `certs`: it exits 1 well before
    `startup_timeout`. The config path and the finished run."""
    path = tmp_path / "helper.conf"
    path.write_text(f'agent_address = "{agent.socket_path}"\ncert_dir = "{certs}"\n' + outputs
                    + f'daemon_mode = false\nstartup_timeout = {STARTUP_TIMEOUT}\n')
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "helper", "-config", str(path)],
                            capture_output=True, text=True, timeout=50, check=False)
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - start < STARTUP_TIMEOUT / 2
    return path, result


def test_one_shot_into_a_missing_directory_exits_1_at_once(tmp_path, agent, certs):
    path, result = one_shot_exits_1_at_once(
        tmp_path, agent, certs,
        'svid_file_name = "gone/svid.pem"\nsvid_key_file_name = "gone/key.pem"\n'
        'svid_bundle_file_name = "gone/bundle.pem"\n')
    assert "No such file or directory (ENOENT)" in result.stderr
    assert "previous files left in place" not in result.stderr
    check = subprocess.run([sys.executable, "-m", "helper", "check-config", "-config",
                            str(path)], capture_output=True, text=True, timeout=50, check=False)
    assert check.returncode == 2
    assert "cert_dir:" not in check.stderr
    assert f"svid_file_name: {certs / 'gone'} is not writable" in check.stderr


def test_one_shot_jwt_into_a_missing_directory_exits_1_at_once(tmp_path, agent, certs):
    _, result = one_shot_exits_1_at_once(
        tmp_path, agent, certs,
        'jwt_svids = [{ jwt_audience = "db", jwt_svid_file_name = "gone/token" }]\n')
    assert "giving up at once" in result.stderr
    assert "No such file or directory (ENOENT)" in result.stderr
