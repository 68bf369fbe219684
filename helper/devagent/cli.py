"""`spiffe-helper dev-agent`: run the development Workload API server.

Prints one readiness line on stdout once listening. SIGUSR1 rotates the SVIDs, SIGUSR2
rotates the CA and the JWT signing key (then the SVIDs), SIGTERM and SIGINT stop it
(exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence

from helper.devagent.agent import DevAgent
from helper.devagent.feed import DEFAULT_JWT_TTL, AgentOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the dev-agent options to `parser` (a sub-command parser of the main CLI)."""
    parser.add_argument(
        "--socket",
        required=True,
        metavar="PATH",
        help="unix socket to listen on (parent folders are created)",
    )
    parser.add_argument(
        "--trust-domain",
        default="example.org",
        metavar="TD",
        help="trust domain of the CA and SVIDs (default: %(default)s)",
    )
    parser.add_argument(
        "--spiffe-id",
        type=_spiffe_id,
        metavar="ID",
        help="SPIFFE ID of the default SVID (default: spiffe://TD/workload)",
    )
    parser.add_argument("--hint", default="", help="hint of the default SVID")
    parser.add_argument(
        "--svid",
        type=_svid,
        action="append",
        default=[],
        metavar="ID[,HINT]",
        help="an extra SVID in every response (repeatable)",
    )
    parser.add_argument(
        "--ttl",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="lifetime of minted SVIDs (default: %(default)g)",
    )
    parser.add_argument(
        "--jwt-ttl",
        type=_positive_float,
        default=DEFAULT_JWT_TTL,
        metavar="SECONDS",
        help="lifetime of minted JWT-SVIDs (default: %(default)g)",
    )
    parser.add_argument(
        "--rotate-every",
        type=_positive_float,
        metavar="SECONDS",
        help="mint and push new SVIDs every SECONDS",
    )
    parser.add_argument(
        "--federate",
        action="append",
        default=[],
        metavar="TD",
        help="federate with trust domain TD (repeatable)",
    )
    parser.add_argument(
        "--intermediate", action="store_true", help="sign SVIDs with an intermediate CA"
    )
    parser.add_argument(
        "--dns-name",
        action="append",
        default=[],
        metavar="NAME",
        help="add a DNS SAN to every SVID (repeatable)",
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; 0 on a clean stop, 1 when the socket can't be used."""
    logging.basicConfig(level=logging.INFO, format="dev-agent: %(message)s")
    return asyncio.run(_serve(_agent_from_args(args)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="spiffe-helper dev-agent",
        description="Serve a development SPIFFE Workload API on a unix socket.",
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def _agent_from_args(args: argparse.Namespace) -> DevAgent:
    return DevAgent(AgentOptions(
        args.socket,
        trust_domain=args.trust_domain,
        spiffe_id=args.spiffe_id,
        hint=args.hint,
        svids=args.svid,
        ttl=args.ttl,
        rotate_every=args.rotate_every,
        federate=args.federate,
        intermediate=args.intermediate,
        dns_names=args.dns_name,
        jwt_ttl=args.jwt_ttl,
    ))


async def _serve(agent: DevAgent) -> int:
    try:
        await agent.start()
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"dev-agent: cannot listen on {agent.address}: {exc}", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handlers: dict[signal.Signals, Callable[[], object]] = {
        signal.SIGUSR1: agent.rotate,
        signal.SIGUSR2: agent.rotate_ca,
        signal.SIGTERM: stop.set,
        signal.SIGINT: stop.set,
    }
    for signum, handler in handlers.items():
        loop.add_signal_handler(signum, handler)
    try:
        print(f"dev-agent: serving {agent.address} for {agent.spiffe_id}", flush=True)
        await stop.wait()
    finally:
        for signum in handlers:
            loop.remove_signal_handler(signum)
        await agent.stop()
    return 0


def _spiffe_id(text: str) -> str:
    if not text.startswith("spiffe://"):
        raise argparse.ArgumentTypeError(f"not a SPIFFE ID (must start with spiffe://): {text}")
    return text


def _svid(text: str) -> tuple[str, str]:
    spiffe_id, _, hint = text.partition(",")
    return _spiffe_id(spiffe_id), hint


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text}")
    return value
