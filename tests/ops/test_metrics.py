"""The Prometheus text format rendered from Status, checked line by line."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timezone

import pytest
from util import REQUIRED_METRICS

from helper.ops.metrics import escape_help, escape_label_value, format_value, render
from helper.ops.status import WRITTEN, Status

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
# One sample line of the text format: name, optional labels, value.
SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})?'
                    r" (NaN|[+-]Inf|-?[0-9.e+-]+)$")


def busy_status() -> Status:
    return Status(
        x509_write_status=WRITTEN,
        spiffe_id="spiffe://example.org/db",
        x509_expiry=datetime(2030, 1, 1, 1, 0, tzinfo=timezone.utc),
        last_rotation=1893455000.25,
        rotations=3,
        reconnects=2,
        write_failures=1,
        refused=Counter({"key_matches_leaf": 2, "chain_verifies": 1}),
        jwt_expiry={'a"udience\\': datetime(2030, 1, 1, 0, 5, tzinfo=timezone.utc)},
        child_restarts=4,
        reloads=Counter({"ok": 5}),
        config_reloads=Counter({"failed": 1}),
        stream_healthy=True,
    )


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_every_required_metric_has_help_and_type():
    text = render(Status(), NOW)
    for name in REQUIRED_METRICS:
        assert f"# HELP {name} " in text
        assert re.search(rf"^# TYPE {name} (gauge|counter)$", text, re.M), name


def test_every_line_is_valid_exposition_format():
    text = render(busy_status(), NOW)
    assert text.endswith("\n")
    for line in text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or SAMPLE.match(line), line


def test_values_come_from_status():
    got = samples(render(busy_status(), NOW))
    assert got["spiffe_helper_x509_svid_expiry_timestamp_seconds"] == 1893459600
    assert got["spiffe_helper_x509_rotations_total"] == 3
    assert got["spiffe_helper_last_rotation_timestamp_seconds"] == 1893455000.25
    assert got['spiffe_helper_jwt_svid_expiry_timestamp_seconds{audience="a\\"udience\\\\"}'] \
        == 1893456300
    assert got["spiffe_helper_workload_api_reconnects_total"] == 2
    assert got['spiffe_helper_refused_messages_total{rule="key_matches_leaf"}'] == 2
    assert got['spiffe_helper_refused_messages_total{rule="chain_verifies"}'] == 1
    assert got["spiffe_helper_write_failures_total"] == 1
    assert got["spiffe_helper_child_restarts_total"] == 4
    assert got['spiffe_helper_reloads_total{result="ok"}'] == 5
    assert got['spiffe_helper_reloads_total{result="failed"}'] == 0
    assert got['spiffe_helper_config_reloads_total{result="failed"}'] == 1
    assert got["spiffe_helper_workload_api_stream_up"] == 1
    assert got["spiffe_helper_ready"] == 1


def test_unknown_values_have_no_sample():
    got = samples(render(Status(), NOW))
    assert "spiffe_helper_x509_svid_expiry_timestamp_seconds" not in got
    assert "spiffe_helper_last_rotation_timestamp_seconds" not in got


@pytest.mark.parametrize(("raw", "escaped"), [("a\\b", "a\\\\b"), ('say "hi"', 'say \\"hi\\"'),
                                              ("two\nlines", "two\\nlines"), ("plain", "plain")])
def test_label_values_are_escaped(raw, escaped):
    assert escape_label_value(raw) == escaped


def test_help_escapes_backslash_and_newline_only():
    assert escape_help('a\\b\n"c"') == 'a\\\\b\\n"c"'


@pytest.mark.parametrize(("value", "text"), [(3, "3"), (2.5, "2.5"), (1.0, "1"),
                                             (float("nan"), "NaN"), (float("inf"), "+Inf"),
                                             (1893455000.25, "1893455000.25")])
def test_numbers(value, text):
    assert format_value(value) == text
