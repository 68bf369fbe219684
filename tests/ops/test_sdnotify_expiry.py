"""sd_notify's pure parts and the expiry timers, in-process on a real event loop."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

import pytest

from helper import app
from helper.config import Config
from helper.ops import sdnotify
from helper.ops.expiry import ExpiryWatch, warning_time
from helper.ops.status import Status

CFG = Config(svid_file_name="s", svid_key_file_name="k", svid_bundle_file_name="b")


@pytest.mark.parametrize(("value", "address"), [
    ("/run/systemd/notify", "/run/systemd/notify"),
    ("@abstract-name", "\0abstract-name"),
    ("@", None), ("relative/path", None), ("vsock:2:1234", None), ("", None),
])
def test_notify_socket_addresses(value, address):
    assert sdnotify.socket_address(value) == address


@pytest.mark.parametrize(("environ", "interval"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "42"}, 0.1),
    ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "43"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None), ({"WATCHDOG_USEC": "x"}, None), ({}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(environ, interval):
    assert sdnotify.watchdog_interval(environ, pid=42) == interval


def test_without_notify_socket_nothing_is_attached():
    assert sdnotify.create(app.initial_status(CFG), {"WATCHDOG_USEC": "1000"}) is None
    core = app.build(CFG, environ={"WATCHDOG_USEC": "1000"})
    # nothing attached: no service (watchdog) and no ready phase (READY=1) of sd_notify
    assert not [f for f in core.features if isinstance(f, sdnotify.SystemdNotify)]


def test_status_text_names_identity_serial_and_expiry():
    text = sdnotify.status_text("spiffe://example.org/db", 0xABC, "2030-01-01T00:00:00+00:00")
    assert text == ("spiffe://example.org/db: X.509-SVID on disk (serial abc, "
                    "expires 2030-01-01T00:00:00+00:00)")


def test_warning_time_is_when_a_sixth_of_the_lifetime_is_left():
    start = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert warning_time(start, start + timedelta(hours=6)) == start + timedelta(hours=5)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self.arrived = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.arrived.set()


def set_leaf(status: Status, serial: int, not_before: datetime, not_after: datetime) -> None:
    status.spiffe_id = "spiffe://example.org/w"
    status.x509_serial = serial
    status.x509_not_before = not_before
    status.x509_expiry = not_after


def test_the_next_write_cancels_the_timers_and_sets_new_ones():
    async def scenario():
        status = app.initial_status(CFG)
        watch = ExpiryWatch(status)
        now = datetime.now(timezone.utc)
        set_leaf(status, 1, now - timedelta(seconds=40), now + timedelta(seconds=20))
        await watch.written("x509", None, [])
        first = list(watch._timers)
        assert len(first) == 2  # the warning and the expiry
        set_leaf(status, 2, now, now + timedelta(hours=1))
        await watch.written("x509", None, [])
        assert all(t.cancelled() for t in first)
        assert len(watch._timers) == 2
        await watch.shutdown(0)
        assert watch._timers == []

    asyncio.run(scenario())


def test_the_warning_fires_when_the_time_comes_and_no_update_came():
    async def scenario():
        lines = Lines()
        logger = logging.getLogger("spiffe_helper.expiry")
        logger.addHandler(lines)
        try:
            status = app.initial_status(CFG)
            watch = ExpiryWatch(status)
            now = datetime.now(timezone.utc)
            # 6 s lifetime with 1.05 s left: the warning is due in 0.05 s
            set_leaf(status, 0xBEEF, now - timedelta(seconds=4.95), now + timedelta(seconds=1.05))
            await watch.written("x509", None, [])
            assert lines.messages == []  # not at once
            await asyncio.wait_for(lines.arrived.wait(), 5)
            await watch.shutdown(0)
        finally:
            logger.removeHandler(lines)
        return lines.messages

    messages = asyncio.run(scenario())
    assert len(messages) == 1
    assert "serial beef" in messages[0]
    assert "less than 1/6 of its lifetime left" in messages[0]
