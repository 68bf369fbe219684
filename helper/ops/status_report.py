"""What `GET /status` serves and what `spiffe-helper status` prints. Pure.

The document holds identities, times, counters and states: never key material, tokens
or file contents.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from helper import __version__
from helper.ops.status import Status


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds") if moment else None


def _iso_ts(seconds: float | None) -> str | None:
    return _iso(datetime.fromtimestamp(seconds, timezone.utc)) if seconds is not None else None


def status_document(status: Status, now: datetime, *, config_file: str = "") -> dict[str, Any]:
    """The JSON document of `GET /status`."""
    return {
        "version": __version__,
        "config_file": config_file,
        "spiffe_id": status.spiffe_id,
        "live": status.live(),
        "ready": status.ready_at(now),
        "x509": {
            "write_status": status.x509_write_status,
            "serial": f"{status.x509_serial:x}" if status.x509_serial is not None else None,
            "not_before": _iso(status.x509_not_before),
            "expires": _iso(status.x509_expiry),
            "rotations": status.rotations,
            "last_rotation": _iso_ts(status.last_rotation),
        },
        "jwt": {
            "write_status": dict(sorted(status.jwt_write_status.items())),
            "expires": {aud: _iso(when) for aud, when in sorted(status.jwt_expiry.items())},
        },
        "workload_api": {
            "stream_healthy": status.stream_healthy,
            "last_message": _iso_ts(status.last_message),
            "reconnects": status.reconnects,
        },
        "child": {
            "state": status.child_state,
            "pid": status.child_pid,
            "restarts": status.child_restarts,
            "reloads": dict(sorted(status.reloads.items())),
        },
        "config_reloads": dict(sorted(status.config_reloads.items())),
        "refused": dict(sorted(status.refused.items())),
        "write_failures": status.write_failures,
        "last_error": status.last_error,
        "last_error_at": _iso_ts(status.last_error_at) if status.last_error else None,
        "last_error_current": status.error_current(now),
        "now": _iso(now),
    }


def _ago(when: datetime, now: datetime) -> str:
    seconds = int((now - when).total_seconds())
    if seconds < 0:
        return f"in {_span(-seconds)}"
    return f"{_span(seconds)} ago"


def _span(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0s"


def _when(text: Any, now: datetime | None) -> str:
    if not isinstance(text, str) or not text:
        return "-"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return f"{text} ({_ago(moment, now)})" if now else text


def _get(doc: Mapping[str, Any], *path: str) -> Any:
    value: Any = doc
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _yes(value: Any) -> str:
    return "yes" if value is True else "no" if value is False else "-"


def status_table(doc: Mapping[str, Any]) -> str:
    """`doc` (a /status document) as a two-column table for a terminal."""
    now_text = doc.get("now")
    try:
        now = datetime.fromisoformat(now_text) if isinstance(now_text, str) else None
    except ValueError:
        now = None
    child_state = _get(doc, "child", "state") or "-"
    pid = _get(doc, "child", "pid")
    child = child_state if pid is None else f"{child_state} (pid {pid})"
    if _get(doc, "child", "state"):
        child += f", {_get(doc, 'child', 'restarts') or 0} restart(s)"
    rows = [
        ("identity", doc.get("spiffe_id") or "-"),
        ("x509 expires", _when(_get(doc, "x509", "expires"), now)),
        ("x509 serial", _get(doc, "x509", "serial") or "-"),
        ("last rotation", _when(_get(doc, "x509", "last_rotation"), now)),
        ("rotations", str(_get(doc, "x509", "rotations") or 0)),
    ]
    for aud, expires in sorted((_get(doc, "jwt", "expires") or {}).items()):
        rows.append((f"jwt {aud} expires", _when(expires, now)))
    rows += [
        ("child", child),
        ("workload api", "healthy" if _get(doc, "workload_api", "stream_healthy")
         else "down"),
        ("live / ready", f"{_yes(doc.get('live'))} / {_yes(doc.get('ready'))}"),
    ]
    if doc.get("last_error"):
        rows.append(("last error", str(doc["last_error"])))
        current = doc.get("last_error_current")
        state = ("still current" if current is True else
                 "past: the helper has recovered since" if current is False else "")
        when = _when(doc.get("last_error_at"), now)
        rows.append(("error at", "; ".join(part for part in (when, state) if part)))
    width = max(len(name) for name, _ in rows)
    return "".join(f"{name:<{width}}  {value}\n" for name, value in rows)
