"""A full disk and a read-only cert_dir (issue 8, item 4).

The helper runs in its own mount namespace (`unshare -m`) with a 64 KiB tmpfs mounted on its
cert_dir; the test sees that tmpfs through /proc/PID/root and changes it there (fills it) or
with nsenter (remounts it read-only). The write fails cleanly, the old files stay, no temp
file is left, the helper reports the failure, and the next rotation once the problem is gone
succeeds.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from relutil import (
    consistent_serial,
    disk_state,
    health_block,
    http_get,
    metric_samples,
    need_root_tools,
    serial_of,
    temps,
    write_conf,
)
from util import free_port, wait_for

from helper.devagent import DevAgentThread

WRITE_FAILED = "writing X.509-SVID files failed"


class NamespacedHelper:
    """The real CLI in a private mount namespace with a small tmpfs on `cert_dir`."""

    def __init__(self, cert_dir: Path, conf: Path, log: Path, size: str = "64k") -> None:
        self.cert_dir = cert_dir
        self.port = 0  # of its health listener
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115
        script = 'mount -t tmpfs -o "size=$1,mode=0755" tmpfs "$2" && shift 2 && exec "$@"'
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", size,
             str(cert_dir), sys.executable, "-m", "helper", "-config", str(conf)],
            stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL)

    @property
    def view(self) -> Path:
        """cert_dir as the helper sees it (its tmpfs), from outside its namespace."""
        return Path(f"/proc/{self.proc.pid}/root") / self.cert_dir.relative_to("/")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def nsenter(self, *command: str) -> None:
        subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m", *command], check=True,
                       timeout=10, capture_output=True)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)

    def __enter__(self) -> NamespacedHelper:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def fill(directory: Path, leave_pages: int = 0) -> Path:
    """Fill the filesystem of `directory` until a one-byte write fails with ENOSPC, then
    free `leave_pages` pages (tmpfs counts whole pages)."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        chunk = b"\0" * 4096
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = b"\0"
        f.truncate(f.tell() - leave_pages * 4096)
    return filler


@pytest.fixture
def namespaced(tmp_path: Path, certs: Path):
    need_root_tools("unshare", "nsenter", "mount")
    with DevAgentThread(str(tmp_path / "agent" / "api.sock")) as agent:
        port = free_port()
        conf = write_conf(tmp_path, agent.socket_path, certs, health_block(port))
        with NamespacedHelper(certs, conf, tmp_path / "helper.log") as helper:
            helper.port = port
            wait_for(lambda: consistent_serial(helper.view), 15, "the first write on the tmpfs")
            wait_for(lambda: live(helper) == 200, 10, "/live to answer 200")
            agent.wait_streams(1)
            assert list(certs.iterdir()) == []  # the tmpfs is the helper's alone
            yield agent, helper


def assert_failed_cleanly(helper: NamespacedHelper, before: dict[str, tuple[bytes, int]],
                          failures: int, code: str) -> None:
    wait_for(lambda: helper.output().count(WRITE_FAILED) == failures, 10, "the failed write")
    line = [x for x in helper.output().splitlines() if WRITE_FAILED in x][-1]
    assert code in line, line
    assert disk_state(helper.view) == before  # old files intact: bytes and inodes
    assert temps(helper.view) == []
    assert helper.proc.poll() is None, helper.output()
    assert live(helper) == 503  # liveness goes bad
    assert metric_samples(helper.port, "write_failures_total") == {"": failures}


def live(helper: NamespacedHelper) -> int | None:
    answer = http_get(helper.port, "/live")
    return answer[0] if answer else None


# no room at all: the first temp fails; room for one page: the certificate's temp is
# written, the key's fails, and the certificate's temp must go too
@pytest.mark.parametrize(("free_pages", "failing_file"), [(0, "svid.pem"), (1, "svid_key.pem")])
def test_disk_full_fails_cleanly_and_the_next_rotation_after_space_returns_succeeds(
        namespaced: tuple[DevAgentThread, NamespacedHelper], free_pages: int,
        failing_file: str) -> None:
    agent, helper = namespaced
    before = disk_state(helper.view)
    filler = fill(helper.view, free_pages)
    agent.rotate()
    assert_failed_cleanly(helper, before, 1, f"{failing_file}: No space left on device (ENOSPC)")
    agent.rotate()  # still full: fails again, still clean
    assert_failed_cleanly(helper, before, 2, "ENOSPC")
    os.unlink(filler)
    good = agent.rotate()
    wait_for(lambda: consistent_serial(helper.view) == serial_of(good), 10, "the next rotation")
    assert temps(helper.view) == []
    wait_for(lambda: live(helper) == 200, 5, "/live to answer 200 again")
    assert helper.output().count(WRITE_FAILED) == 2
    assert helper.stop() == 0


def test_read_only_cert_dir_fails_cleanly_and_recovers_when_writable_again(
        namespaced: tuple[DevAgentThread, NamespacedHelper]) -> None:
    agent, helper = namespaced
    before = disk_state(helper.view)
    helper.nsenter("mount", "-o", "remount,ro", str(helper.cert_dir))
    agent.rotate()
    assert_failed_cleanly(helper, before, 1, "EROFS")
    helper.nsenter("mount", "-o", "remount,rw", str(helper.cert_dir))
    good = agent.rotate()
    wait_for(lambda: consistent_serial(helper.view) == serial_of(good), 10, "the next rotation")
    assert temps(helper.view) == []
    wait_for(lambda: live(helper) == 200, 5, "/live to answer 200 again")
    assert helper.stop() == 0
