"""The `spiffe-helper` command line.

Compatible with the Go tool's flags (`-config FILE`, `-daemon-mode=false`, `-version`,
`-help`: Go's flag package takes one or two dashes alike), plus subcommands:

    spiffe-helper [run] [-config FILE] [-daemon-mode=true|false]
    spiffe-helper check-config [-config FILE]
    spiffe-helper dev-agent --socket PATH [...]
    spiffe-helper demo [--dir DIR]
    spiffe-helper status [--url URL | -config FILE]

Heavy modules (gRPC, cryptography, the dev-agent) are imported only by the subcommand
that needs them, so `check-config` and `-version` stay fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from helper import __version__

SUBCOMMANDS = ("run", "check-config", "dev-agent", "demo", "status", "help")
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 1
EXIT_NOT_READY = 3

# Long flags the Go tool spells with one dash; we accept one or two for all of them.
_GO_STYLE = ("config", "daemon-mode", "version", "help", "socket", "dir", "log-level",
             "log-format", "url")


def _go_style(argv: Sequence[str]) -> list[str]:
    """Rewrite `-flag`/`-flag=v` to `--flag`/`--flag=v`, as Go's flag package reads both."""
    out = []
    for arg in argv:
        name = arg[1:].split("=", 1)[0]
        if arg.startswith("-") and not arg.startswith("--") and name in _GO_STYLE:
            arg = "-" + arg
        out.append(arg)
    return out


def _parse_bool(text: str) -> bool:
    # Go's strconv.ParseBool
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def _add_config_flags(parser: argparse.ArgumentParser, *, daemon_mode: bool) -> None:
    parser.add_argument("-c", "--config", default="helper.conf", metavar="FILE",
                        help="configuration file, HCL or .toml (default: helper.conf)")
    if daemon_mode:
        parser.add_argument("--daemon-mode", nargs="?", const=True, type=_parse_bool,
                            default=None, metavar="BOOL",
                            help="keep running and renew (default true; overrides the file)")
    parser.add_argument("--log-level", choices=("debug", "info", "warn", "error"),
                        default=None, help="overrides log_level of the file (default info)")
    parser.add_argument("--log-format", choices=("text", "json"), default=None,
                        help="overrides log_format of the file (default text)")


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    """Command-line values that win over the config file (on reloads too)."""
    return {key: value for key, value in (("log_level", args.log_level),
                                          ("log_format", args.log_format)) if value is not None}


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spiffe-helper",
        description="Fetch SVIDs from the SPIFFE Workload API, write them to disk atomically "
                    "and reload the daemon that uses them.",
        epilog="subcommands: run (default), check-config, dev-agent, demo, status. "
               "'spiffe-helper SUBCOMMAND -help' for each.")
    _add_config_flags(parser, daemon_mode=True)
    parser.add_argument("--version", action="store_true", help="print version and exit")
    return parser


def _version_text() -> str:
    import platform
    import ssl

    lines = [f"spiffe-helper {__version__}", f"Python {platform.python_version()}",
             f"OpenSSL {ssl.OPENSSL_VERSION.split()[1]}"]
    import contextlib
    from importlib.metadata import PackageNotFoundError, version

    # grpclib is the Workload API client; grpcio serves it (dev-agent, demo). Neither is
    # imported here: the installed versions are read from the package metadata.
    for package in ("grpclib", "grpcio"):
        with contextlib.suppress(PackageNotFoundError):  # both are dependencies
            lines.append(f"{package} {version(package)}")
    return "\n".join(lines)


def _config_error(exc: Exception) -> int:
    print(f"spiffe-helper: invalid configuration: {exc}", file=sys.stderr)
    return EXIT_CONFIG


def cmd_run(argv: Sequence[str]) -> int:
    args = _run_parser().parse_args(argv)
    if args.version:
        print(_version_text())
        return 0
    from helper import config, logs

    logs.setup(args.log_level or "info", args.log_format or "text")
    overrides = _overrides(args)

    def load() -> config.Config:
        return config.load(args.config, daemon_mode=args.daemon_mode, overrides=overrides)

    try:
        cfg = load()
    except config.ConfigError as exc:
        return _config_error(exc)
    logs.setup(cfg.log_level, cfg.log_format)
    import asyncio
    import logging

    for warning in config.config_warnings(cfg):
        logging.getLogger("spiffe_helper").warning("%s: %s", args.config, warning)

    import gc

    from helper import app

    # Everything the run needs is imported. Freezing moves those objects out of the
    # cyclic collector's sight: later collections scan only what the run allocates, and
    # the interpreter's exit no longer walks every module (a one-shot run ends ~50 ms
    # sooner; a daemon's full collections get cheaper). Not after gc.disable(): garbage
    # left by the imports would be frozen with them (collecting it first costs ~17 ms).
    gc.freeze()
    return asyncio.run(app.build(cfg, load_config=load).run())


def cmd_check_config(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="spiffe-helper check-config",
        description="Validate a configuration and print it with every default resolved.")
    _add_config_flags(parser, daemon_mode=True)
    args = parser.parse_args(argv)
    from helper import config

    try:
        cfg = config.load(args.config, daemon_mode=args.daemon_mode, overrides=_overrides(args))
    except config.ConfigError as exc:
        return _config_error(exc)
    for warning in config.config_warnings(cfg):
        print(f"spiffe-helper: warning: {args.config}: {warning}", file=sys.stderr)
    print(config.render_resolved(cfg), end="")
    return 0


def cmd_dev_agent(argv: Sequence[str]) -> int:
    from helper.devagent import cli as devagent_cli

    parser = argparse.ArgumentParser(
        prog="spiffe-helper dev-agent",
        description="Serve the SPIFFE Workload API on a Unix socket with a throw-away CA "
                    "(for local use and tests; never in production).")
    devagent_cli.add_arguments(parser)
    return devagent_cli.run_from_args(parser.parse_args(argv))


def cmd_demo(argv: Sequence[str]) -> int:
    from helper import demo

    parser = argparse.ArgumentParser(
        prog="spiffe-helper demo",
        description="Run the helper against an embedded dev-agent and show two rotations.")
    demo.add_arguments(parser)
    return demo.run_from_args(parser.parse_args(argv))


def status_url(base: str) -> str:
    """The /status URL from --url: a bare http://host:port gets the /status path."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base if "://" in base else f"http://{base}")
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"--url must be an http:// or https:// URL, got {base!r}")
    path = parts.path if parts.path not in ("", "/") else "/status"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def cmd_status(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="spiffe-helper status",
        description="Ask a running helper (its health listener) for its identity, expiry, "
                    "last rotation and child state. Exit 0 ready, 1 unreachable, 3 not ready.")
    parser.add_argument("--url", metavar="URL",
                        help="the helper's health listener, e.g. http://127.0.0.1:8081 "
                             "(default: found from the config file)")
    parser.add_argument("-c", "--config", default="helper.conf", metavar="FILE",
                        help="config file of the running helper, to find its listener "
                             "(default: helper.conf)")
    args = parser.parse_args(argv)
    if args.url:
        try:
            url = status_url(args.url)
        except ValueError as exc:
            print(f"spiffe-helper status: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    else:
        from helper import config, health

        try:
            cfg = config.load(args.config)
        except config.ConfigError as exc:
            return _config_error(exc)
        checks = cfg.health_checks
        if not checks.listener_enabled:
            print(f"spiffe-helper status: {args.config}: health_checks.listener_enabled is "
                  "false; the status command reads the health listener (or pass --url)",
                  file=sys.stderr)
            return EXIT_CONFIG
        url = f"http://{health.url_host(checks)}:{checks.bind_port}/status"
    import json
    import urllib.error
    import urllib.request

    from helper import statusview

    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - http(s) checked
            doc = json.loads(response.read(1 << 20))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"spiffe-helper status: cannot read {url}: {reason}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if not isinstance(doc, dict):
        print(f"spiffe-helper status: {url} did not answer with a status document",
              file=sys.stderr)
        return EXIT_UNREACHABLE
    print(statusview.status_table(doc), end="")
    return 0 if doc.get("ready") is True else EXIT_NOT_READY


def main(argv: Sequence[str] | None = None) -> int:
    args = _go_style(sys.argv[1:] if argv is None else argv)
    command = "run"
    if args and args[0] in SUBCOMMANDS:
        command, args = args[0], args[1:]
    if command == "help":
        _run_parser().print_help()
        return 0
    handler = {"run": cmd_run, "check-config": cmd_check_config,
               "dev-agent": cmd_dev_agent, "demo": cmd_demo, "status": cmd_status}[command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
