"""`spiffe-helper demo`: the whole product in a few seconds, with no SPIRE anywhere.

Starts the embedded dev-agent on a temporary Unix socket, runs the real helper pipeline
against it over that socket into a folder, makes the agent rotate the SVID, and prints
what reached disk each time, plus the JWT-SVID and JWT bundle written next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from helper import config
from helper.features import Feature
from helper.identity.snapshot import X509Snapshot
from helper.ops import logs
from helper.ops.status import UNWRITTEN, Status

if TYPE_CHECKING:
    from helper.devagent import DevAgent

DEMO_ID = "spiffe://example.org/demo/workload"
FILES = {"svid_file_name": "svid.pem", "svid_key_file_name": "svid_key.pem",
         "svid_bundle_file_name": "svid_bundle.pem"}
JWT_AUDIENCE = "demo-audience"
JWT_FILES = {"jwt_svid_file_name": "jwt_svid.token", "jwt_bundle_file_name": "jwt_bundle.json"}
STEP_TIMEOUT = 15.0


class Serve(Protocol):
    """helper.app.serve, which helper.cli hands over (only the CLI imports the core)."""

    def __call__(self, cfg: config.Config, *, features: Sequence[Feature] = (),
                 status: Status | None = None,
                 stop: asyncio.Event | None = None) -> Coroutine[Any, Any, int]: ...


class Watch(Feature):
    """What the demo shows: each X.509 write, and when every file is on disk."""

    def __init__(self) -> None:
        self.writes: asyncio.Queue[X509Snapshot] = asyncio.Queue()
        self.all_written = asyncio.Event()

    async def written(self, pipeline: str, snapshot: X509Snapshot,
                      changed: Sequence[Path]) -> None:
        self.writes.put_nowait(snapshot)

    async def ready(self) -> None:
        self.all_written.set()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default="spiffe-demo", type=Path,
                        help="folder to write the files into (default: ./spiffe-demo)")
    parser.add_argument("--rotations", default=2, type=int, metavar="N",
                        help="rotations to show (default 2)")
    parser.add_argument("--ttl", default=3600.0, type=float, metavar="SECONDS",
                        help="lifetime of the demo SVIDs in seconds (default 3600)")
    parser.add_argument("--log-level", choices=("debug", "info", "warn", "error"), default="warn",
                        metavar="LEVEL",
                        help="helper log level while the demo runs: debug, info, warn or "
                             "error (default warn)")


def run_from_args(args: argparse.Namespace, serve: Serve) -> int:
    logs.setup(args.log_level)
    return asyncio.run(run_demo(args.dir, serve, rotations=args.rotations, ttl=args.ttl))


def _describe_jwt(cfg: config.Config, status: Status, out: Callable[[str], None]) -> None:
    token = cfg.output_path(JWT_FILES["jwt_svid_file_name"])
    payload = token.read_text().split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    expiry = status.jwt_expiry[JWT_AUDIENCE]
    bundle = cfg.output_path(JWT_FILES["jwt_bundle_file_name"])
    out(f"JWT-SVID:   {claims['sub']} for audience {JWT_AUDIENCE!r}, expires "
        f"{expiry.isoformat()}; verified against the JWT bundle before writing")
    out(f"  {token}  mode {token.stat().st_mode & 0o7777:04o}  raw token")
    out(f"  {bundle}  mode {bundle.stat().st_mode & 0o7777:04o}  JWT bundle (Go format)")


def _describe_files(cfg: config.Config, out: Callable[[str], None]) -> None:
    for key, name in FILES.items():
        path = cfg.output_path(name)
        st = path.stat()
        kind = "private key (PKCS#8)" if key == "svid_key_file_name" else (
            f"{path.read_bytes().count(b'BEGIN CERTIFICATE')} certificate(s)")
        out(f"  {path}  mode {st.st_mode & 0o7777:04o}  {kind}")


@dataclass(frozen=True)
class OnDisk:
    """What a person can compare across a rotation, read back from the files on disk."""

    serial: int
    fingerprint: str  # SHA-256 of the leaf's DER, as `openssl x509 -fingerprint -sha256`
    not_after: str
    key: str  # SHA-256 of the private key's public key (SubjectPublicKeyInfo)

    @classmethod
    def read(cls, cfg: config.Config) -> OnDisk:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        leaf = x509.load_pem_x509_certificates(
            cfg.output_path(FILES["svid_file_name"]).read_bytes())[0]
        key = serialization.load_pem_private_key(
            cfg.output_path(FILES["svid_key_file_name"]).read_bytes(), None)
        spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(serial=leaf.serial_number,
                   fingerprint=_colons(leaf.fingerprint(hashes.SHA256())),
                   not_after=leaf.not_valid_after_utc.isoformat(),
                   key=hashlib.sha256(spki).hexdigest())

    def lines(self) -> list[str]:
        return [f"serial    {self.serial:X}", f"SHA-256   {self.fingerprint}",
                f"notAfter  {self.not_after}"]


def _colons(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


def _describe_rotation(n: int, before: OnDisk, after: OnDisk, svid_name: str, key_name: str,
                       out: Callable[[str], None]) -> None:
    out(f"rotation {n}: {svid_name} and {key_name} replaced")
    for label, old, new in zip(("serial", "SHA-256", "notAfter"), before.lines(),
                               after.lines(), strict=True):
        same = old == new and label == "notAfter"
        out(f"  {label:<9} before {old.split(maxsplit=1)[1]}")
        out(f"  {'':<9} after  {new.split(maxsplit=1)[1]}"
            + ("  (same second: the demo rotates at once)" if same else ""))
    changed = "a new key" if after.key != before.key else "the SAME key (not rotated)"
    out(f"  key       {key_name} holds {changed}: public key SHA-256 "
        f"{before.key[:16]}... -> {after.key[:16]}...")


async def run_demo(directory: Path, serve: Serve, *, rotations: int = 2, ttl: float = 3600.0,
                   out: Callable[[str], None] = print) -> int:
    from helper.devagent import AgentOptions, DevAgent

    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spiffe-helper-demo-") as tmp:
        agent = DevAgent(AgentOptions(os.path.join(tmp, "agent.sock"), spiffe_id=DEMO_ID, ttl=ttl))
        await agent.start()
        try:
            return await _demo_against(agent, directory, serve, rotations, out)
        finally:
            await agent.stop()


async def _demo_against(agent: DevAgent, directory: Path, serve: Serve, rotations: int,
                        out: Callable[[str], None]) -> int:
    cfg = config.from_mapping({
        "agent_address": agent.address, "cert_dir": str(directory), **FILES,
        "jwt_bundle_file_name": JWT_FILES["jwt_bundle_file_name"],
        "jwt_svids": [{"jwt_audience": JWT_AUDIENCE,
                       "jwt_svid_file_name": JWT_FILES["jwt_svid_file_name"]}],
    }, source="<demo>")
    watch = Watch()
    status = Status(x509_write_status=UNWRITTEN)  # the demo writes X.509 files
    out(f"dev-agent: serving {agent.address} (trust domain {agent.trust_domain})")
    stop = asyncio.Event()
    running = asyncio.create_task(serve(cfg, features=(watch,), status=status, stop=stop))
    try:
        snapshot = await asyncio.wait_for(watch.writes.get(), STEP_TIMEOUT)
        await asyncio.wait_for(watch.all_written.wait(), STEP_TIMEOUT)  # JWT files too
        out(f"identity:   {snapshot.default.spiffe_id}")
        current = OnDisk.read(cfg)
        out("first SVID on disk:")
        for line in current.lines():
            out(f"  {line}")
        out("files:")
        _describe_files(cfg, out)
        _describe_jwt(cfg, status, out)
        svid_path = cfg.output_path(FILES["svid_file_name"])
        key_name = FILES["svid_key_file_name"]
        for n in range(1, rotations + 1):
            before = current
            agent.rotate()
            await asyncio.wait_for(watch.writes.get(), STEP_TIMEOUT)
            current = OnDisk.read(cfg)
            _describe_rotation(n, before, current, svid_path.name, key_name, out)
        out("files after the rotations:")
        _describe_files(cfg, out)
        out(f"check it yourself: openssl x509 -in {svid_path} -noout -serial "
            f"-fingerprint -sha256 -enddate")
    except TimeoutError:
        out("demo: timed out waiting for the helper to write files")
        return 1
    finally:
        stop.set()
        code = await running
    out(f"done: {rotations} rotation(s) written atomically; files left in {directory}/")
    return code
