"""The container example's PID 1 situation, reproduced without Docker.

`unshare --pid --fork --mount-proc` makes the helper PID 1 of a new PID namespace, as the
ENTRYPOINT of examples/container/Dockerfile is: the kernel delivers it only the signals it
handles and re-parents orphans to it. The helper runs the example's own helper.hcl and
nginx.conf (rendered as the Dockerfile's sed line does). SIGTERM to PID 1 must stop nginx
cleanly (nginx removes its pid file only on a clean exit), the exit status must be
nginx's, and no process of the namespace may be left.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
from pathlib import Path

import psutil
import pytest
from harness import (
    EXAMPLES,
    Daemon,
    daemon_workdir,
    render_example,
    require_binaries,
    require_root,
    served_cert_https,
    wait_listening,
)
from util import free_port, leaf_serial, wait_for

from helper.devagent import AgentOptions, DevAgentThread

pytestmark = pytest.mark.daemon


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    require_root("unshare --pid --mount-proc needs CAP_SYS_ADMIN")
    return require_binaries("nginx", "unshare")


@pytest.fixture
def container(tools):
    """A work directory laid out as the image's /srv/spiffe, and a dev-agent."""
    with daemon_workdir("container") as work, \
            DevAgentThread(AgentOptions(work / "agent.sock", dns_names=("localhost",))) as agent:
        for sub in ("certs", "www", "tmp"):
            (work / sub).mkdir()
        (work / "www" / "index.html").write_text("hello from nginx over a SPIFFE SVID\n")
        yield work, agent


def image_command(work: Path) -> list[str]:
    """The Dockerfile's ENTRYPOINT + CMD (`spiffe-helper -config ... -- nginx ...`), with
    the image's paths moved to `work` and the helper run from this checkout."""
    dockerfile = (EXAMPLES / "container" / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert entrypoint[0] == "/opt/spiffe-helper/bin/spiffe-helper"
    assert entrypoint[-1] == "--"
    return [sys.executable, "-m", "helper",
            *(arg.replace("/srv/spiffe", str(work)) for arg in entrypoint[1:] + cmd)]


def start_pid1(tools: dict[str, str], work: Path, agent: DevAgentThread, port: int) -> Daemon:
    render_example("container", work, {"WORK": str(work), "PORT": str(port),
                                       "AGENT": agent.socket_path},
                   files=("helper.hcl", "nginx.conf"))
    # unshare ignores SIGTERM while it waits for its child; --kill-child makes a SIGKILL of
    # unshare (the teardown when a test fails midway) kill PID 1, and so the namespace.
    return Daemon([tools["unshare"], "--pid", "--fork", "--mount-proc", "--kill-child", "--",
                   *image_command(work)],
                  work / "pid1.log", stop_signal=signal.SIGKILL)


def pid_inside(process: psutil.Process) -> int:
    """The process's pid in the innermost PID namespace it belongs to."""
    status = Path(f"/proc/{process.pid}/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("NSpid:")).split()[-1])


def namespace_init(unshare: psutil.Process) -> psutil.Process:
    """The helper: the child `unshare --fork` made, PID 1 inside the new namespace."""
    (init,) = wait_for(unshare.children, 10, what="unshare's child")
    assert pid_inside(init) == 1
    return init


def test_sigterm_to_pid1_stops_nginx_cleanly_exits_with_its_status_and_leaves_no_orphan(
        tools, container):
    work, agent = container
    port = free_port()
    pid1 = start_pid1(tools, work, agent, port)
    with pid1:
        wait_listening(port, pid1, "nginx under PID 1")
        served = served_cert_https(port, work / "certs" / "svid_bundle.pem")
        assert served.serial_number == leaf_serial(work / "certs" / "svid.pem")
        init = namespace_init(psutil.Process(pid1.proc.pid))
        namespace = init.children(recursive=True)  # the nginx master and its workers
        nginx_master = int((work / "nginx.pid").read_text())  # a pid inside the namespace
        assert nginx_master in {pid_inside(p) for p in namespace}

        init.terminate()  # SIGTERM from outside, as `docker stop` sends it
        status = pid1.proc.wait(30)

    log = pid1.output()
    assert status == 0, log  # nginx exits 0 on SIGTERM; unshare passes PID 1's status on
    assert "signal 15 (SIGTERM) received" in log, log  # forwarded to nginx by PID 1
    assert not (work / "nginx.pid").exists(), "nginx did not shut down cleanly"
    _gone, alive = psutil.wait_procs([init, *namespace], timeout=5)
    assert not alive, f"left behind: {alive}"


def test_pid1_exits_with_nginx_s_status_when_nginx_fails(tools, container):
    work, agent = container
    with socket.socket() as taken:  # nginx cannot bind: it exits 1, and so must PID 1
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pid1 = start_pid1(tools, work, agent, port)
        with pid1:
            status = pid1.proc.wait(30)
    log = pid1.output()
    assert re.search(r"bind\(\) to 0\.0\.0\.0:\d+ failed", log), log
    assert status == 1, log
