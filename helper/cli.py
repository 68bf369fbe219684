"""The `spiffe-helper` command line.

Compatible with the Go tool's flags (`-config FILE`, `-daemon-mode=false`, `-version`,
`-help`), read with Go's flag rules (helper/config/flags.py), plus subcommands:

    spiffe-helper [run] [-config FILE] [-daemon-mode=true|false] [-- CMD ARG...]
    spiffe-helper check-config [-config FILE] [-- CMD ARG...]
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
from helper.config import flags as goflag

DEFAULT_CONFIG = "helper.conf"
LOG_FORMATS = ("text", "json", "logfmt")

SUBCOMMANDS = ("run", "check-config", "status", "demo", "dev-agent", "help")
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 1
EXIT_NOT_READY = 3

USAGE = ("spiffe-helper [run|check-config|status|demo|dev-agent|help] [flags] "
         "[-- CMD [ARG...]]")
SUBCOMMAND_LIST = """\
subcommands:
  run            (the default) fetch, write and renew the SVIDs; supervise CMD
  check-config   validate the configuration and print it with every default resolved
  status         ask a running helper for its identity, expiry and child state
  demo           run the helper against an embedded dev-agent and show rotations
  dev-agent      serve a development Workload API on a Unix socket (never production)
  help [SUB]     this text, or the help of one subcommand

Flags take one dash or two, as Go's flag package reads them (-config, --config,
-config=FILE). 'spiffe-helper SUBCOMMAND -help' shows the flags of each."""
COMMAND_HELP = """\
-- CMD [ARG...]: everything after -- is the command to start and supervise, overriding
cmd and cmd_args of the file (as tini and dumb-init take it), e.g.
  spiffe-helper -config helper.conf -- nginx -g 'daemon off;'"""


def _parser(prog: str, description: str, epilog: str | None = None,
            usage: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     usage=usage, allow_abbrev=False, add_help=False,
                                     formatter_class=goflag.HelpFormatter)
    parser.add_argument("-h", "-help", action="help", help="show this help and exit")
    return parser


def _parse_bool(text: str) -> bool:
    # Go's strconv.ParseBool
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def _add_config_flags(parser: argparse.ArgumentParser, *, check: bool = False) -> None:
    parser.add_argument("-c", "-config", dest="config", default=None, metavar="FILE",
                        help="configuration file, HCL or .toml (default: helper.conf)")
    parser.add_argument("-daemon-mode", dest="daemon_mode", nargs="?", const=True,
                        type=_parse_bool, default=None, metavar="BOOL",
                        help=("check as if daemon_mode were BOOL (as run -daemon-mode would)"
                              if check else
                              "keep running and renew (default true; overrides the file)"))
    if check:
        # Accepted so that a run's command line can be checked as it is; they change
        # only the printed log_level/log_format.
        level_help = format_help = argparse.SUPPRESS
    else:
        level_help = "debug, info, warn or error: overrides log_level of the file"
        format_help = "text, json or logfmt: overrides log_format of the file"
    parser.add_argument("-log-level", dest="log_level", choices=("debug", "info", "warn", "error"),
                        default=None, metavar="LEVEL", help=level_help)
    parser.add_argument("-log-format", dest="log_format", choices=LOG_FORMATS, default=None,
                        metavar="FORMAT", help=format_help)


def _overrides(args: argparse.Namespace, command: list[str] | None) -> dict[str, str]:
    """Command-line values that win over the config file (on reloads too)."""
    values = {key: value for key, value in (("log_level", args.log_level),
                                            ("log_format", args.log_format))
              if value is not None}
    if command is not None:
        from helper.supervise.cmdargs import join_cmd_args

        values["cmd"] = command[0]
        values["cmd_args"] = join_cmd_args(command[1:])
    return values


def _run_parser(prog: str = "spiffe-helper run", usage: str | None = None,
                epilog: str = COMMAND_HELP) -> argparse.ArgumentParser:
    parser = _parser(
        prog, "Fetch SVIDs from the SPIFFE Workload API, write them to disk atomically and "
              "reload the daemon that uses them.", epilog=epilog,
        usage=usage or f"{prog} [flags] [-- CMD [ARG...]]")
    _add_config_flags(parser)
    parser.add_argument("-version", dest="version", action="store_true",
                        help="print version and exit")
    return parser


def _main_parser() -> argparse.ArgumentParser:
    return _run_parser("spiffe-helper", USAGE, COMMAND_HELP + "\n\n" + SUBCOMMAND_LIST)


def _parse_command(parser: argparse.ArgumentParser,
                   argv: Sequence[str]) -> tuple[argparse.Namespace, list[str] | None]:
    args, command = goflag.parse(parser, argv, command=True)
    if command is not None and not command:
        parser.error("-- must be followed by the command to supervise")
    return args, command


def _config_path(args: argparse.Namespace) -> str | None:
    """The -config file; None (after a one-line error) when neither it nor helper.conf exists."""
    if args.config is not None:
        return str(args.config)
    import os

    if os.path.exists(DEFAULT_CONFIG):
        return DEFAULT_CONFIG
    print(f"spiffe-helper: no -config given and no {DEFAULT_CONFIG} in {os.getcwd()}: "
          f"name the configuration file with -config FILE "
          f"(e.g. spiffe-helper -config /etc/spiffe-helper/helper.conf)", file=sys.stderr)
    return None


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


def cmd_run(argv: Sequence[str], parser: argparse.ArgumentParser | None = None) -> int:
    args, command = _parse_command(parser or _run_parser(), argv)
    if args.version:
        print(_version_text())
        return 0
    path = _config_path(args)
    if path is None:
        return EXIT_CONFIG
    from helper import config
    from helper.ops import logs

    logs.setup(args.log_level or "info", args.log_format or "text")
    try:
        overrides = _overrides(args, command)
    except ValueError as exc:
        print(f"spiffe-helper: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    def load() -> config.Config:
        return config.load(path, daemon_mode=args.daemon_mode, overrides=overrides)

    try:
        cfg = load()
    except config.ConfigError as exc:
        return _config_error(exc)
    logs.setup(cfg.log_level, cfg.log_format)
    import asyncio
    import logging

    for warning in config.config_warnings(cfg):
        logging.getLogger("spiffe_helper").warning("%s: %s", path, warning)

    import gc

    from helper import app

    # Everything the run needs is imported. Freezing moves those objects out of the
    # cyclic collector's sight: later collections scan only what the run allocates, and
    # the interpreter's exit no longer walks every module (a one-shot run ends ~50 ms
    # sooner; a daemon's full collections get cheaper). Not after gc.disable(): garbage
    # left by the imports would be frozen with them (collecting it first costs ~17 ms).
    gc.freeze()
    return asyncio.run(app.build(cfg, load_config=load).run())


def _check_config_parser() -> argparse.ArgumentParser:
    parser = _parser(
        "spiffe-helper check-config",
        "Validate a configuration and print it with every default resolved. Every output "
        "directory must be writable by the user running the check (a temporary file is "
        "created and removed there): run it as the user the helper runs as. Exit 0 when "
        "it is valid, 2 with a one-line error when it is not. Takes run's command line "
        "unchanged, so the line a service runs can be checked before it starts.",
        usage="spiffe-helper check-config [-config FILE] [-daemon-mode[=BOOL]] "
              "[-- CMD [ARG...]]",
        epilog="-- CMD [ARG...]: check with this command in place of cmd and cmd_args, "
               "as run would use it.")
    _add_config_flags(parser, check=True)
    return parser


def cmd_check_config(argv: Sequence[str]) -> int:
    args, command = _parse_command(_check_config_parser(), argv)
    path = _config_path(args)
    if path is None:
        return EXIT_CONFIG
    from helper import config

    try:
        overrides = _overrides(args, command)
        cfg = config.load(path, daemon_mode=args.daemon_mode, overrides=overrides)
    except config.ConfigError as exc:
        return _config_error(exc)
    except ValueError as exc:
        print(f"spiffe-helper: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from helper.outputs import preflight

    problems = preflight.check_writable(cfg)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        print(f"spiffe-helper: invalid configuration: {path}: {problems[0]}{more}",
              file=sys.stderr)
        return EXIT_CONFIG
    for warning in config.config_warnings(cfg):
        print(f"spiffe-helper: warning: {path}: {warning}", file=sys.stderr)
    print(config.render_resolved(cfg), end="")
    return 0


def _dev_agent_parser() -> argparse.ArgumentParser:
    from helper.devagent import cli as devagent_cli

    parser = _parser(
        "spiffe-helper dev-agent",
        "Serve the SPIFFE Workload API on a Unix socket with a throw-away CA "
        "(for local use and tests; never in production).",
        epilog="signals:\n"
               "  SIGUSR1        mint and push new SVIDs (a rotation)\n"
               "  SIGUSR2        rotate the CA and the JWT signing key, then the SVIDs\n"
               "  SIGTERM/INT    stop (exit 0)\n\n"
               "It prints one line on stdout once it listens ('dev-agent: serving ...'). "
               "A rotation by hand:\n\n"
               "  kill -USR1 $(pgrep -f 'spiffe-helper dev-agent')")
    devagent_cli.add_arguments(parser)
    return parser


def cmd_dev_agent(argv: Sequence[str]) -> int:
    from helper.devagent import cli as devagent_cli

    args, _ = goflag.parse(_dev_agent_parser(), argv)
    return devagent_cli.run_from_args(args)


def _demo_parser() -> argparse.ArgumentParser:
    from helper import demo

    parser = _parser(
        "spiffe-helper demo",
        "Run the helper against an embedded dev-agent and show rotations: the serial, "
        "SHA-256 fingerprint and notAfter of the certificate before and after each, and "
        "that the key changed.")
    demo.add_arguments(parser)
    return parser


def cmd_demo(argv: Sequence[str]) -> int:
    from helper import app, demo

    args, _ = goflag.parse(_demo_parser(), argv)
    return demo.run_from_args(args, app.serve)


def status_url(base: str) -> str:
    """The /status URL from --url: a bare http://host:port gets the /status path."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base if "://" in base else f"http://{base}")
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"--url must be an http:// or https:// URL, got {base!r}")
    path = parts.path if parts.path not in ("", "/") else "/status"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _status_parser() -> argparse.ArgumentParser:
    parser = _parser(
        "spiffe-helper status",
        "Ask a running helper (its health listener) for its identity, expiry, last "
        "rotation, last error and child state.",
        epilog=f"exit status:\n"
               f"  0  the helper is ready\n"
               f"  {EXIT_UNREACHABLE}  the helper cannot be reached (not running, wrong URL)\n"
               f"  {EXIT_CONFIG}  bad command line or configuration: nothing was asked\n"
               f"  {EXIT_NOT_READY}  the helper answered and is not ready (see its last error)")
    parser.add_argument("-url", dest="url", metavar="URL",
                        help="the helper's health listener, e.g. http://127.0.0.1:8081 "
                             "(default: found from the config file)")
    parser.add_argument("-c", "-config", dest="config", default=None, metavar="FILE",
                        help="config file of the running helper, to find its listener "
                             "(default: helper.conf)")
    return parser


def cmd_status(argv: Sequence[str]) -> int:
    args, _ = goflag.parse(_status_parser(), argv)
    if args.url:
        try:
            url = status_url(args.url)
        except ValueError as exc:
            print(f"spiffe-helper status: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    else:
        from helper import config
        from helper.ops import health

        path = _config_path(args)
        if path is None:
            return EXIT_CONFIG
        try:
            cfg = config.load(path)
        except config.ConfigError as exc:
            return _config_error(exc)
        checks = cfg.health_checks
        if not checks.listener_enabled:
            print(f"spiffe-helper status: {path}: health_checks.listener_enabled is "
                  "false; the status command reads the health listener (or pass --url)",
                  file=sys.stderr)
            return EXIT_CONFIG
        url = f"http://{health.url_host(checks)}:{checks.bind_port}/status"
    import json
    import urllib.error
    import urllib.request

    from helper.ops import status_report as statusview

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


PARSERS = {"run": _run_parser, "check-config": _check_config_parser,
           "status": _status_parser, "demo": _demo_parser, "dev-agent": _dev_agent_parser}


def _unknown_subcommand(name: str) -> int:
    import difflib

    close = difflib.get_close_matches(name, SUBCOMMANDS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    print(f"usage: {USAGE}\nspiffe-helper: unknown subcommand {name!r}{hint}; the subcommands "
          f"are {', '.join(SUBCOMMANDS)}; flags start with -", file=sys.stderr)
    return EXIT_CONFIG


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and not args[0].startswith("-"):
            command, args = args[0], args[1:]
            if command not in SUBCOMMANDS:
                return _unknown_subcommand(command)
        else:
            return cmd_run(args, _main_parser())
        if command == "help":
            if args and args[0] in PARSERS:
                PARSERS[args[0]]().print_help()
            elif args:
                return _unknown_subcommand(args[0])
            else:
                _main_parser().print_help()
            return 0
        handler = {"run": cmd_run, "check-config": cmd_check_config,
                   "dev-agent": cmd_dev_agent, "demo": cmd_demo, "status": cmd_status}[command]
        return handler(args)
    except KeyboardInterrupt:
        return 130
