"""`log_format = "logfmt"`: lines shaped like the Go helper's logrus output.

    time="2026-12-02T01:42:14Z" level=info msg="X.509 certificates updated" files=3 ...

For the events both tools log, `msg` is the Go helper's own text (pkg/sidecar and
cmd/spiffe-helper of spiffe/spiffe-helper), so log-based alerts written for the Go tool
keep matching after a migration. The mapping is kept here, in one table keyed by the
format string of the helper's own log call: no module that logs has to know about it.
Other lines keep their text as `msg`. Keys after `msg` are sorted, as logrus sorts them,
and every line carries `system=spiffe-helper`, as the Go helper's logger does.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

# logrus quotes a value unless every character is one of these (TextFormatter.needsQuoting).
_BARE = re.compile(r"^[A-Za-z0-9\-._/@^+]+$")
_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warning", "ERROR": "error",
           "CRITICAL": "fatal"}


@dataclass(frozen=True)
class GoEvent:
    """One event both tools log: our format string -> the Go text and its fields."""

    ours: str  # the format string of the helper's log call (record.msg)
    go: str  # the Go helper's msg text
    # From the call's arguments: (msg, fields); msg None means `go` as it is. Returning
    # None leaves the line as the helper wrote it (e.g. "unchanged", which Go never logs).
    fields: Callable[[tuple[Any, ...]], tuple[str | None, dict[str, Any]] | None]
    where: str  # where Go logs it, for the docs


def _error_field(index: int) -> Callable[[tuple[Any, ...]], tuple[None, dict[str, Any]]]:
    return lambda args: (None, {"error": args[index]})


GO_EVENTS: tuple[GoEvent, ...] = (
    GoEvent("received X.509-SVID update for %s", "Received update",
            lambda a: (None, {"spiffe_id": a[0]}), "pkg/sidecar x509Watcher.OnX509ContextUpdate"),
    GoEvent("X.509-SVID %s (serial %x, expires %s): %d file(s) updated",
            "X.509 certificates updated",
            lambda a: (None, {"spiffe_id": a[0], "serial": f"{a[1]:x}", "expires": a[2],
                              "files": a[3]}),
            "pkg/sidecar updateCertificates"),
    GoEvent("%s X.509-SVID files failed: %s%s", "Unable to dump bundle", _error_field(1),
            "pkg/sidecar updateCertificates (WithError)"),
    # helper/workload/client.py's retry line; only for the X.509 stream (the JWT bundle stream
    # uses the same line, and Go words that one differently).
    GoEvent("%s: %s; retrying in %.1f s", "Error while watching x509 context",
            lambda a: (f"Error while watching x509 context: {a[1]}",
                       {"retry_in": f"{a[2]:.1f}s"})
            if str(a[0]).startswith("X.509-SVID stream") else
            (f"Error while watching JWT bundles: {a[1]}", {"retry_in": f"{a[2]:.1f}s"})
            if str(a[0]).startswith("JWT bundle") else None,
            "pkg/sidecar x509Watcher.OnX509ContextWatchError (Errorf)"),
    GoEvent("workload API: %s (not retried)", "Error while watching x509 context",
            lambda a: (f"Error while watching x509 context: {a[0]}", {}),
            "pkg/sidecar x509Watcher.OnX509ContextWatchError (Errorf)"),
    GoEvent("cannot start cmd %s: %s", "Unable to signal process",
            lambda a: (None, {"error": f'error executing process "{a[0]}": {a[1]}'}),
            "pkg/sidecar updateCertificates -> signalProcess (WithError)"),
    GoEvent("pid file %s: not permitted to signal the process it names",
            "Unable to signal PID file",
            lambda a: (None, {"error": f"pid file {a[0]}: not permitted to signal the "
                                       "process it names"}),
            "pkg/sidecar updateCertificates -> signalPIDFileWithRetry (WithError)"),
    GoEvent("pid file %s: %s; not signalled", "Unable to signal PID file",
            lambda a: (None, {"error": f"pid file {a[0]}: {a[1]}"}),
            "pkg/sidecar updateCertificates -> signalPIDFileWithRetry (WithError)"),
    GoEvent("pid file %s: %s; gave up after %d tries", "Unable to signal PID file",
            lambda a: (None, {"error": f"pid file {a[0]}: {a[1]}"}),
            "pkg/sidecar updateCertificates -> signalPIDFileWithRetry (WithError)"),
    GoEvent("JWT bundle file %s updated", "JWT bundle updated",
            lambda a: (None, {"file": a[0]}), "pkg/sidecar JWTBundlesWatcher.OnJWTBundlesUpdate"),
    GoEvent("writing the JWT bundle failed: %s; previous file left in place",
            "Error writing JWT Bundle to disk",
            lambda a: (f"Error writing JWT Bundle to disk: {a[0]}", {}),
            "pkg/sidecar JWTBundlesWatcher.OnJWTBundlesUpdate (Errorf)"),
    GoEvent("JWT-SVID %s for audience %s (expires %s) %s %s", "JWT SVID updated",
            lambda a: (None, {"spiffe_id": a[0], "audience": a[1], "expires": a[2],
                              "file": a[4]}) if a[3] == "written to" else None,
            "pkg/sidecar updateJWTSVID"),
    GoEvent("writing the JWT-SVID failed: %s", "Unable to update JWT SVID",
            lambda a: (f"Unable to update JWT SVID: {a[0]}", {}),
            "pkg/sidecar updateJWTSVID (Errorf)"),
    GoEvent("fetching the JWT-SVID for audience %s failed: %s", "Unable to fetch JWT SVID",
            lambda a: (f"Unable to fetch JWT SVID: {a[1]}", {"audience": a[0]}),
            "pkg/sidecar fetchJWTSVID (Errorf)"),
    GoEvent("daemon mode: watching %s", "Launching daemon",
            lambda a: (None, {"address": a[0]}), "cmd/spiffe-helper startSidecar"),
)
_BY_FORMAT = {event.ours: event for event in GO_EVENTS}


def value_text(value: Any) -> str:
    """A value as logrus writes it: bare when safe, else a double-quoted string."""
    text = value if isinstance(value, str) else str(value)
    if _BARE.match(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def go_message(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """The msg and extra fields of a record: the Go text for a shared event."""
    event = _BY_FORMAT.get(record.msg) if isinstance(record.msg, str) else None
    if event is not None:
        args = record.args if isinstance(record.args, tuple) else ()
        try:
            mapped = event.fields(args)
        except (IndexError, TypeError, ValueError):
            mapped = None
        if mapped is not None:
            msg, fields = mapped
            return (msg or event.go), fields
    return record.getMessage(), {}


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, timezone.utc)
        msg, fields = go_message(record)
        fields["system"] = "spiffe-helper"
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        parts = [f"time={value_text(moment.strftime('%Y-%m-%dT%H:%M:%SZ'))}",
                 f"level={_LEVELS.get(record.levelname, record.levelname.lower())}",
                 f"msg={value_text(msg)}"]
        parts += [f"{key}={value_text(value)}" for key, value in sorted(fields.items())]
        return " ".join(parts)
