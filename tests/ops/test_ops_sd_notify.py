"""Operations end to end: real sd_notify datagrams from the real CLI against the dev agent."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

import grpc
from ops_setup import Setup, start
from util import (
    env_without,
    leaf_serial,
    serial_of,
    wait_for,
)

from helper import app
from helper.config import Config

# --- sd_notify -------------------------------------------------------------------------------


class NotifySocket:
    """What systemd would receive: datagrams on a socket bound in tmp, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[tuple[list[str], bool]] = []  # lines, files existed on arrival
        self.files: list[Path] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            exist = all(f.exists() for f in self.files)
            self.messages.append((data.decode().split("\n"), exist))

    def lines(self) -> list[str]:
        return [line for lines, _ in list(self.messages) for line in lines]

    def index(self, prefix: str, after: int = -1) -> int | None:
        """Position of the first line starting with `prefix` after position `after`."""
        for position, line in enumerate(self.lines()):
            if position > after and line.startswith(prefix):
                return position
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_sd_notify_messages_arrive_in_order(tmp_path, agent, certs):
    setup = Setup(tmp_path, agent, certs)
    notify = NotifySocket(tmp_path / "notify")
    notify.files = [certs / n for n in ("svid.pem", "svid_key.pem", "svid_bundle.pem")]
    env = env_without("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                      NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="200000")
    try:
        with start(setup, tmp_path, env=env) as helper:
            ready = wait_for(lambda: notify.index("READY=1"), what="READY=1")
            ready_message = next(m for m in notify.messages if "READY=1" in m[0])
            assert ready_message[1], "READY=1 came before the files were on disk"
            first = leaf_serial(certs / "svid.pem")
            status_line = next(line for line in notify.lines() if line.startswith("STATUS="))
            assert agent.spiffe_id in status_line
            assert f"{first:x}" in status_line
            pings = wait_for(lambda: notify.index("WATCHDOG=1", after=ready), what="WATCHDOG=1")

            serial = serial_of(agent.rotate())
            rotated = wait_for(lambda: notify.index(f"STATUS={agent.spiffe_id}: X.509-SVID on "
                                                    f"disk (serial {serial:x}", after=pings),
                               what="STATUS after rotation")

            helper.proc.send_signal(signal.SIGHUP)
            reloading = wait_for(lambda: notify.index("RELOADING=1", after=rotated),
                                 what="RELOADING=1")
            assert notify.lines()[reloading + 1].startswith("MONOTONIC_USEC=")
            reloaded = wait_for(lambda: notify.index("READY=1", after=reloading),
                                what="READY=1 after the reload")

            # the stream goes down: the watchdog pings stop until it is back
            agent.fail_next(1000, grpc.StatusCode.PERMISSION_DENIED, "agent restarting")
            agent.end_streams()
            down = wait_for(lambda: notify.index("STATUS=Workload API stream down",
                                                 after=reloaded), what="stream down")
            calls = agent.calls
            wait_for(lambda: agent.calls > calls, what="a retry while down", timeout=15)
            agent.fail_next(0, grpc.StatusCode.PERMISSION_DENIED)
            back = wait_for(lambda: notify.index(f"STATUS={agent.spiffe_id}", after=down),
                            what="stream healthy again", timeout=15)
            assert "WATCHDOG=1" not in notify.lines()[down:back]
            wait_for(lambda: notify.index("WATCHDOG=1", after=back), what="pings resume")

            assert helper.stop() == 0
        lines = notify.lines()
        assert lines[-2] == "STOPPING=1"
        assert lines[-1] == "STATUS=stopping (exit code 0)"
    finally:
        notify.close()


def test_notify_socket_is_not_passed_on_and_abstract_names_work(tmp_path, agent, certs):
    """An abstract socket (@name) works, and the variables leave the environment once read,
    so no process the helper starts talks to systemd in its name."""
    from helper.ops import sdnotify

    name = f"spiffe-helper-test-{os.getpid()}-{id(tmp_path)}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0" + name)
    receiver.settimeout(5)
    try:
        notifier = sdnotify.Notifier(sdnotify.socket_address("@" + name))
        assert notifier.send("READY=1", "STATUS=x")
        assert receiver.recv(100) == b"READY=1\nSTATUS=x"
        notifier.close()
    finally:
        receiver.close()
    environ = {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000", "PATH": "/bin"}

    core = app.build(Config(svid_file_name="s", svid_key_file_name="k",
                            svid_bundle_file_name="b"), environ=environ)
    attached = core.features[-1]  # sd_notify comes last (READY=1 after the others)
    assert isinstance(attached, sdnotify.SystemdNotify)
    assert attached.watchdog == 0.0005
    assert environ == {"PATH": "/bin"}
    assert attached in core.features  # its serve phase pings the watchdog
    attached.notifier.close()
