"""The helper's metrics in the Prometheus text exposition format (version 0.0.4). Pure.

Rendered here rather than with `prometheus_client`: importing that package costs about
20-30 ms and 1.6 MiB on top of what the daemon already loads (50 ms alone), and a
dozen samples read from `helper.ops.status.Status` need nothing of it but the text format.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from helper import __version__
from helper.ops.status import Status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "spiffe_helper_"

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Family:
    """One metric: its name (without the prefix), type, help text and samples."""

    name: str
    kind: str  # "gauge" or "counter"
    help: str
    samples: tuple[tuple[Labels, float], ...]


def escape_label_value(value: str) -> str:
    """Backslash, double quote and line feed escaped, as the format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Integers without a fraction, other numbers as Python's shortest repr; +Inf, NaN."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def render_families(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for family in families:
        name = PREFIX + family.name
        lines.append(f"# HELP {name} {escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.kind}")
        for labels, value in family.samples:
            label_text = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels)
            suffix = f"{{{label_text}}}" if labels else ""
            lines.append(f"{name}{suffix} {format_value(value)}")
    return "\n".join(lines) + "\n"


def _one(value: float | None) -> tuple[tuple[Labels, float], ...]:
    return () if value is None else (((), value),)


def _by(label: str, values: Mapping[str, float], always: Iterable[str] = ()) -> tuple[
        tuple[Labels, float], ...]:
    keys = sorted(set(values) | set(always))
    return tuple((((label, key),), float(values.get(key, 0))) for key in keys)


def families(status: Status, now: datetime) -> list[Family]:
    """Every metric the helper exports, read from `status`."""
    x509_expiry = status.x509_expiry.timestamp() if status.x509_expiry else None
    jwt_expiry = {aud: when.timestamp() for aud, when in status.jwt_expiry.items()}
    return [
        Family("x509_svid_expiry_timestamp_seconds", "gauge",
               "When the X.509-SVID on disk expires (Unix time).", _one(x509_expiry)),
        Family("x509_rotations_total", "counter",
               "X.509-SVID rotations written to disk (the first write not included).",
               _one(status.rotations)),
        Family("last_rotation_timestamp_seconds", "gauge",
               "When the X.509-SVID files were last replaced by a new SVID (Unix time).",
               _one(status.last_rotation)),
        Family("jwt_svid_expiry_timestamp_seconds", "gauge",
               "When the JWT-SVID on disk for an audience expires (Unix time).",
               _by("audience", jwt_expiry)),
        Family("workload_api_reconnects_total", "counter",
               "Workload API streams re-opened after an error or after the agent ended them.",
               _one(status.reconnects)),
        Family("workload_api_stream_up", "gauge",
               "1 while the Workload API stream is healthy, else 0.",
               _one(1 if status.stream_healthy else 0)),
        Family("refused_messages_total", "counter",
               "Workload API messages refused by validation, by the rule they broke.",
               _by("rule", status.refused)),
        Family("federated_bundles_dropped_total", "counter",
               "Malformed federated bundles left out of a message (the rest of it was used), "
               "by trust domain.", _by("trust_domain", status.dropped_bundles)),
        Family("write_failures_total", "counter",
               "Sets of files that could not be written.", _one(status.write_failures)),
        Family("child_restarts_total", "counter",
               "Restarts of the supervised process.", _one(status.child_restarts)),
        Family("reloads_total", "counter",
               "Reloads of the process using the files (signal or command), by result.",
               _by("result", status.reloads, always=("ok", "failed"))),
        Family("config_reloads_total", "counter",
               "Re-reads of the configuration file (SIGHUP or watch_config), by result.",
               _by("result", status.config_reloads, always=("ok", "failed"))),
        Family("live", "gauge", "1 while the liveness check passes, else 0.",
               _one(1 if status.live() else 0)),
        Family("ready", "gauge", "1 while the readiness check passes, else 0.",
               _one(1 if status.ready_at(now) else 0)),
        Family("build_info", "gauge", "Always 1; the version is a label.",
               (((("version", __version__),), 1.0),)),
    ]


def render(status: Status, now: datetime | None = None) -> str:
    """The /metrics body."""
    return render_families(families(status, now or datetime.now(timezone.utc)))
