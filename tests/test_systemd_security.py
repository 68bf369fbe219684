"""Least privilege, proven without systemd as PID 1.

* `systemd-analyze security --offline=yes` rates every unit (and each drop-in applied to
  its unit) at or below the exposure the docs state.
* The real helper runs, against the real dev-agent, with exactly what
  `spiffe-helper.service` leaves it: its `User=` (created from systemd/sysusers.d), the
  capability bounding and ambient sets parsed from its `CapabilityBoundingSet=` and
  `AmbientCapabilities=` (setpriv), no-new-privileges, and the seccomp filters of its
  `SystemCallFilter=`/`SystemCallErrorNumber=`, `MemoryDenyWriteExecute=` and
  `RestrictAddressFamilies=` (tests/sandbox.py). It writes the files with
  `file_owner`/`file_group`, the key 0600, signals a daemon of another user through its
  pid file and serves its health endpoint.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from confine import Sandbox, cap_mask, helper_pid, proc_status, tool, world_dir
from unitfile import capabilities, setting
from util import ROOT, Process, free_port, leaf_serial, wait_for

from helper.devagent import DevAgentThread

UNITS = ROOT / "systemd"
SYSUSERS = UNITS / "sysusers.d" / "spiffe-helper.conf"
FILES_ONLY = UNITS / "spiffe-helper.service"
TEMPLATE = UNITS / "spiffe-helper@.service"
NGINX_DROP_IN = UNITS / "spiffe-helper@nginx.service.d" / "10-nginx.conf"
POSTGRESQL_DROP_IN = UNITS / "spiffe-helper@postgresql.service.d" / "10-postgresql.conf"

# The exposure each unit must not exceed: the numbers docs/operations.md and docs/systemd.md
# state (tests/test_docs.py checks that they agree with these).
MAX_EXPOSURE = {
    "spiffe-helper.service": 1.8,
    "spiffe-helper@.service": 5.3,
    "spiffe-helper@nginx.service": 2.5,
    "spiffe-helper@postgresql.service": 1.4,
}
DAEMON_USER, DAEMON_GROUP = "nobody", "nogroup"
EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)")


# --- the scores ---------------------------------------------------------------------------


def exposure(directory: Path, unit: str) -> tuple[float, str]:
    """`systemd-analyze security --offline=yes` of `unit`, staged in `directory` (its
    drop-in directories beside it are applied, as for a unit in /etc/systemd/system)."""
    result = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=yes", "--no-pager", unit],
        cwd=directory, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{directory}:"})
    found = EXPOSURE.search(result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    return float(found.group(1)), result.stdout


def stage(tmp_path: Path) -> Path:
    for unit in ("spiffe-helper.service", "spiffe-helper@.service"):
        shutil.copy(UNITS / unit, tmp_path / unit)
    for drop_in in (NGINX_DROP_IN, POSTGRESQL_DROP_IN):
        (tmp_path / drop_in.parent.name).mkdir()
        shutil.copy(drop_in, tmp_path / drop_in.parent.name / drop_in.name)
    return tmp_path


@pytest.mark.parametrize("unit", sorted(MAX_EXPOSURE))
def test_exposure_is_at_most_the_stated_score(tmp_path, unit):
    score, report = exposure(stage(tmp_path), unit)
    assert score <= MAX_EXPOSURE[unit], report


def test_drop_ins_are_applied_to_the_scored_unit(tmp_path):
    """The per-daemon scores above are those of the template with the drop-in, not of
    the bare template: the PostgreSQL drop-in's User= shows in the report."""
    directory = stage(tmp_path)
    bare, _ = exposure(directory, "spiffe-helper@other.service")
    with_drop_in, report = exposure(directory, "spiffe-helper@postgresql.service")
    assert with_drop_in < bare
    assert "Service runs as root user" not in report


def test_files_only_unit_keeps_only_the_capabilities_its_comments_justify():
    caps = capabilities([FILES_ONLY])
    assert caps == ["CAP_CHOWN", "CAP_FOWNER", "CAP_KILL"]
    assert capabilities([FILES_ONLY], "AmbientCapabilities") == caps
    text = FILES_ONLY.read_text()
    for cap, key in {"CAP_CHOWN": "file_owner", "CAP_FOWNER": "file_owner",
                     "CAP_KILL": "pid_file_name"}.items():
        assert re.search(rf"#\s+{cap}\s+{key}", text), (cap, key)
    assert setting([FILES_ONLY], "User") == ["spiffe-helper"]
    assert setting([FILES_ONLY], "SystemCallErrorNumber") == ["EPERM"]
    assert setting([FILES_ONLY], "MemoryDenyWriteExecute") == ["yes"]


# --- the helper under the files-only unit's limits ---------------------------------------


@pytest.fixture
def world() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp_path is 0700 root)."""
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: needs root (setpriv --reuid, mount namespaces)")
    with world_dir() as path:
        yield path


@pytest.fixture
def helper_user() -> pwd.struct_passwd:
    """The unit's User=, created from the shipped sysusers.d file (idempotent)."""
    [user] = setting([FILES_ONLY], "User")
    subprocess.run([tool("systemd-sysusers"), str(SYSUSERS)], check=True,
                   capture_output=True, timeout=60)
    return pwd.getpwnam(user)


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except OSError:
        return None


class Scene:
    """The dev-agent, a daemon of another user with its pid file, the helper's state
    directory and config, all under `world`."""

    def __init__(self, world: Path, agent: DevAgentThread, user: pwd.struct_passwd) -> None:
        self.world = world
        self.sandbox = Sandbox(world)
        os.chmod(agent.socket_path, 0o666)
        os.chmod(Path(agent.socket_path).parent, 0o755)
        daemon = pwd.getpwnam(DAEMON_USER)
        self.daemon_dir = world / "daemon"
        self.daemon_dir.mkdir(mode=0o755)
        os.chown(self.daemon_dir, daemon.pw_uid, daemon.pw_gid)
        self.record = self.daemon_dir / "record.jsonl"
        self.pid_file = self.daemon_dir / "daemon.pid"
        # StateDirectory=spiffe-helper, StateDirectoryMode=0755
        self.state = world / "state"
        self.state.mkdir(mode=0o755)
        os.chown(self.state, user.pw_uid, user.pw_gid)
        self.port = free_port()
        self.config = world / "helper.conf"
        self.config.write_text(f"""\
agent_address = "unix://{agent.socket_path}"
cert_dir = "{self.state}"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
file_owner = "{DAEMON_USER}"
file_group = "{DAEMON_GROUP}"
pid_file_name = "{self.pid_file}"
renew_signal = "SIGHUP"
health_checks {{
  listener_enabled = true
  bind_address = "127.0.0.1"
  bind_port = {self.port}
}}
""")
        # as the docs say: readable by the helper's group only
        os.chown(self.config, 0, user.pw_gid)
        self.config.chmod(0o640)
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
                    "HOME": str(self.state), "LANG": "C.UTF-8"}

    def start_daemon(self) -> Process:
        argv = [sys.executable, str(ROOT / "tests" / "children" / "recorder.py"),
                "--record", str(self.record), "--pid-file", str(self.pid_file)]
        proc = Process(self.sandbox.command(argv, user=DAEMON_USER, group=DAEMON_GROUP, caps=[]),
                       env=self.env, stop_timeout=15.0)
        wait_for(lambda: self.pid_file.exists(), 20, "the daemon's pid file")
        return proc

    def events(self) -> list[dict[str, object]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def hups(self) -> int:
        return sum(1 for e in self.events() if e.get("name") == "SIGHUP")


def run_confined_helper(scene: Scene, user: pwd.struct_passwd, caps: list[str],
                        log: Path) -> Process:
    argv = [sys.executable, "-m", "helper", "-config", str(scene.config)]
    command = scene.sandbox.command(argv, user=user.pw_name,
                                    group=grp.getgrgid(user.pw_gid).gr_name, caps=caps,
                                    units=[FILES_ONLY])
    return Process(command, log, env=scene.env, stop_timeout=15.0)


@contextlib.contextmanager
def daemon_and_helper(world: Path, user: pwd.struct_passwd,
                      caps: list[str]) -> Iterator[tuple[DevAgentThread, Scene, Process]]:
    """The scene's daemon and the confined helper (its log world/helper.log) on a dev-agent;
    on exit the helper is stopped, then the daemon."""
    with DevAgentThread(str(world / "agent" / "api.sock")) as agent:
        scene = Scene(world, agent, user)
        with scene.start_daemon(), \
                run_confined_helper(scene, user, caps, world / "helper.log") as helper:
            yield agent, scene, helper


@pytest.mark.timeout(120)
def test_helper_works_with_only_what_the_files_only_unit_leaves_it(world, helper_user):
    tool("setpriv")
    caps = capabilities([FILES_ONLY])
    assert capabilities([FILES_ONLY], "AmbientCapabilities") == caps
    log = world / "helper.log"
    with daemon_and_helper(world, helper_user, caps) as (agent, scene, helper):
        key = scene.state / "svid_key.pem"
        svid = scene.state / "svid.pem"
        wait_for(lambda: (key.exists() and svid.exists()) or helper.proc.poll() is not None,
                 30, "the files")
        assert helper.proc.poll() is None, log.read_text()

        # it is confined as the unit says
        status = proc_status(helper_pid(helper.proc))
        assert status["Uid"].split()[0] == str(helper_user.pw_uid)
        assert int(status["CapBnd"], 16) == cap_mask(caps)
        assert int(status["CapEff"], 16) == cap_mask(caps)
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2"  # a filter
        assert int(status["Seccomp_filters"]) >= 3

        # files with file_owner/file_group; the key 0600
        daemon_user = pwd.getpwnam(DAEMON_USER)
        for path in (key, svid, scene.state / "svid_bundle.pem"):
            st = os.stat(path)
            assert (st.st_uid, st.st_gid) == (daemon_user.pw_uid,
                                              grp.getgrnam(DAEMON_GROUP).gr_gid), path
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600

        # the daemon of another user, signalled through its pid file
        wait_for(lambda: scene.hups() >= 1, 20, "SIGHUP to the daemon after the write")
        serial = leaf_serial(svid)
        agent.rotate()
        wait_for(lambda: leaf_serial(svid) != serial, 20, "the rotated SVID")
        wait_for(lambda: scene.hups() >= 2, 20, "SIGHUP to the daemon after rotation")

        # health served
        url = f"http://127.0.0.1:{scene.port}"
        assert wait_for(lambda: http_status(url + "/ready") == 200, 20, "/ready")
        assert http_status(url + "/live") == 200
        assert helper.proc.poll() is None
    output = log.read_text()
    assert "not permitted" not in output.lower(), output
    assert not re.search(r" ERROR |Traceback", output), output


@pytest.mark.timeout(120)
def test_the_proof_is_not_vacuous_without_cap_kill(world, helper_user):
    """Without CAP_KILL the same setup cannot signal the daemon: the capabilities the
    test derives from the unit are what makes the other test pass."""
    caps = [c for c in capabilities([FILES_ONLY]) if c != "CAP_KILL"]
    log = world / "helper.log"
    with daemon_and_helper(world, helper_user, caps) as (_agent, scene, _helper):
        wait_for(lambda: "not permitted to signal" in log.read_text(), 30,
                 "the refused signal")
    assert scene.hups() == 0


@pytest.mark.timeout(120)
def test_cap_kill_does_not_reach_a_process_the_pid_file_owner_does_not_own(world, helper_user):
    """Issue 12 item 3 under the unit: with CAP_KILL the helper could signal anyone, so a
    pid file written by the daemon's user is trusted only for that user's processes. A pid
    file of `nobody` naming a root process: no signal, one refusal line (the owner is read
    from /proc/PID, which ProtectProc=noaccess leaves visible)."""
    caps = capabilities([FILES_ONLY])
    victim = subprocess.Popen(["sleep", "120"], stdin=subprocess.DEVNULL)
    try:
        with DevAgentThread(str(world / "agent" / "api.sock")) as agent:
            scene = Scene(world, agent, helper_user)
            daemon = pwd.getpwnam(DAEMON_USER)
            scene.pid_file.write_text(f"{victim.pid}\n")
            os.chown(scene.pid_file, daemon.pw_uid, daemon.pw_gid)
            log = world / "helper.log"
            with run_confined_helper(scene, helper_user, caps, log) as helper:
                wait_for(lambda: f"not owned by uid {daemon.pw_uid}" in log.read_text(), 30,
                         "the refusal")
                assert victim.poll() is None, "the root process was signalled"
                assert helper.proc.poll() is None, log.read_text()
    finally:
        victim.kill()
        victim.wait(5)


PROBE = """\
import errno, mmap, os, socket
def outcome(f):
    try:
        f()
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return "allowed"
print(outcome(lambda: os.setpriority(os.PRIO_PROCESS, 0, 1)))
print(outcome(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)))
print(outcome(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)))
print(outcome(lambda: socket.socket(socket.AF_INET6).close()))
print(outcome(lambda: os.chown("/", 0, 0)))
"""


@pytest.mark.timeout(60)
def test_the_seccomp_sandbox_refuses_what_the_unit_refuses(world, helper_user):
    """tests/sandbox.py is not vacuous: under the files-only unit's filters a priority
    change (@resources) and writable+executable memory fail with EPERM, a netlink socket
    with EAFNOSUPPORT, while an AF_INET6 socket is allowed; without CAP_CHOWN in the set
    given here, chown() of / fails too."""
    command = Sandbox(world).command(
        [sys.executable, "-c", PROBE], user=helper_user.pw_name,
        group=grp.getgrgid(helper_user.pw_gid).gr_name, caps=[], units=[FILES_ONLY])
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert result.stdout.split() == ["EPERM", "EPERM", "EAFNOSUPPORT", "allowed", "EPERM"], (
        result.stdout + result.stderr)
