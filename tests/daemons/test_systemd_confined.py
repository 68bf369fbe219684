"""The per-daemon drop-ins work: nginx and PostgreSQL run as the helper's cmd with only
what `spiffe-helper@.service` plus their drop-in leave them, without systemd as PID 1.

The user, capabilities, seccomp filters and /proc options come from the unit files
(tests/confine.py, tests/sandbox.py); each daemon serves the SVID the helper wrote, and
serves the next one after a rotation, i.e. after the helper's SIGHUP.
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confine import Sandbox, cap_mask, helper_pid, proc_status
from harness import (
    SERVED_WITHIN,
    Stack,
    example_stack,
    postgres_cluster,
    require_binaries,
    require_root,
    rotate_and_wait_served,
    served_cert_https,
    served_cert_postgres,
)
from unitfile import capabilities, setting
from util import ROOT, Process, leaf_serial, mode, wait_for

from helper.devagent import DevAgentThread

pytestmark = pytest.mark.daemon

UNITS = ROOT / "systemd"
TEMPLATE = UNITS / "spiffe-helper@.service"
NGINX = [TEMPLATE, UNITS / "spiffe-helper@nginx.service.d" / "10-nginx.conf"]
POSTGRESQL = [TEMPLATE, UNITS / "spiffe-helper@postgresql.service.d" / "10-postgresql.conf"]
REFUSALS = ("operation not permitted", "permission denied", "[emerg]", "[alert]", "fatal",
            "panic", "traceback")


def confined_helper(work: Path, units: list[Path], config: Path) -> Process:
    """The helper, started through the sandbox instead of directly."""
    user = setting(units, "User") or ["root"]
    group = setting(units, "Group") or user
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "PYTHONPATH": str(ROOT), "HOME": str(work), "LANG": "C.UTF-8"}
    command = Sandbox(work).command([sys.executable, "-m", "helper", "-config", str(config)],
                                    user=user[0], group=group[0],
                                    caps=capabilities(units), units=units)
    return Process(command, work / "helper.log", env=env)


def check_confined(helper: Process, units: list[Path]) -> None:
    status = proc_status(helper_pid(helper.proc))
    user = setting(units, "User") or ["root"]
    assert status["Uid"].split()[0] == str(pwd.getpwnam(user[0]).pw_uid)
    assert int(status["CapBnd"], 16) == cap_mask(capabilities(units))
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"


def no_refusals(text: str) -> None:
    lowered = text.lower()
    assert not [r for r in REFUSALS if r in lowered], text


@pytest.fixture
def nginx_stack() -> Iterator[tuple[Path, DevAgentThread, int, Process]]:
    require_root("nginx's master runs as root with the drop-in's capabilities")
    require_binaries("nginx", "setpriv", "unshare")
    with example_stack(Stack, "nginx", ("certs", "www", "tmp"), name="nginx-confined",
                       dns_names=("localhost",)) as stack:
        (stack.work / "www" / "index.html").write_text("confined\n")
        helper = confined_helper(stack.work, NGINX, stack.files["helper.hcl"])
        with stack.running(helper, serving="nginx (started by the confined helper)"):
            yield stack.work, stack.agent, stack.port, helper


@pytest.mark.timeout(120)
def test_nginx_runs_under_its_drop_in(nginx_stack):
    work, agent, port, helper = nginx_stack
    check_confined(helper, NGINX)
    svid, bundle = work / "certs" / "svid.pem", work / "certs" / "svid_bundle.pem"
    assert served_cert_https(port, bundle).serial_number == leaf_serial(svid)
    rotation = rotate_and_wait_served(agent, svid, "svid",
                                      lambda: served_cert_https(port, bundle))
    assert rotation.seconds < SERVED_WITHIN
    # the workers changed user (CAP_SETUID/SETGID kept), the master still signals them
    # (CAP_KILL): the rotation's SIGHUP replaced them
    master = int((work / "nginx.pid").read_text())
    workers = [int(p) for p in os.listdir("/proc") if p.isdigit()
               and _ppid(int(p)) == master]
    assert workers
    assert {proc_status(w)["Uid"].split()[0] for w in workers} == {
        str(pwd.getpwnam("nobody").pw_uid)}
    assert helper.stop(timeout=20) == 0
    no_refusals(helper.output())


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rfind(b")") + 2:].split()[1])


PG_HELPER = """\
agent_address = "{agent}"
cert_dir = "{work}/certs"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
key_file_mode = 0600
cmd = "{postgres}"
cmd_args = "-D {work}/data"
renew_signal = "SIGHUP"
stop_signal = "SIGINT"
on_cmd_exit = "exit"
"""


@pytest.mark.timeout(180)
def test_postgresql_runs_under_its_drop_in_without_capabilities():
    require_root("the helper runs as postgres")
    bins = require_binaries("initdb", "postgres", "setpriv", "unshare")
    postgres = pwd.getpwnam("postgres")
    assert capabilities(POSTGRESQL) == []

    with example_stack(Stack, "postgresql", ("certs", "run", "data", "client"),
                       name="postgresql-confined",
                       files=("postgresql-spiffe.conf", "pg_hba.conf")) as stack:
        work, agent, port = stack.work, stack.agent, stack.port
        os.chmod(agent.socket_path, 0o666)
        # the helper's state directory, chowned to User= by systemd; the server's own
        postgres_cluster(stack, bins, owned=("certs", "run", "data", "client"))
        config = work / "helper.hcl"
        config.write_text(PG_HELPER.format(agent=agent.socket_path, work=work,
                                           postgres=bins["postgres"]))
        helper = confined_helper(work, POSTGRESQL, config)
        with stack.running(helper, serving="postgres (started by the confined helper)"):
            check_confined(helper, POSTGRESQL)
            svid, key = work / "certs" / "svid.pem", work / "certs" / "svid_key.pem"
            bundle = work / "certs" / "svid_bundle.pem"
            # the server's own files, as PostgreSQL wants its key, with no file_owner
            assert os.stat(key).st_uid == postgres.pw_uid
            assert mode(key) == 0o600

            def served():
                return served_cert_postgres(port, bundle)

            wait_for(lambda: served().serial_number == leaf_serial(svid), 10,
                     "the first SVID served")
            rotation = rotate_and_wait_served(agent, svid, "svid", served)
            assert rotation.seconds < SERVED_WITHIN
            assert helper.stop(timeout=30) == 0
        no_refusals(helper.output())
