"""Every file made from an X.509 snapshot, for one configuration.

`X509Renderer.render(snapshot)` returns the whole write set of one message: the Go trio,
the `x509_svids` identities, the combined PEM, the PKCS#12, the credential folder and the
bundle map. The formats themselves are pure (`helper.outputs.pem`, `helper.outputs.formats`);
this module adds the few reads they need: the PKCS#12 password file, the names already in
the credential folder (for redaction), and, once, the PKCS#12 and bundle map left by an
earlier run (so an unchanged identity is not rewritten after a restart).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from helper.config import Config, ConfigError, read_password_file
from helper.errors import Refused, WriteError
from helper.identity.snapshot import X509SVID, X509Snapshot
from helper.identity.spiffeid import shown
from helper.identity.x509 import select_svid
from helper.outputs.formats import (
    NAME_MAX,
    BundleSequences,
    GoLayoutOptions,
    Pkcs12Memo,
    bundle_map_json,
    combined_pem,
    render_credential_folder,
    render_go_layout,
    trust_bundle_name_fits,
    trust_domain_of_file,
)
from helper.outputs.pem import OutputFile, render_x509
from helper.outputs.writer import read_regular

log = logging.getLogger("spiffe_helper.outputs")

CREDENTIAL_FOLDER_ENV = "SPIFFE_CREDENTIAL_FOLDER"
MAX_SEED_BYTES = 4 << 20


def exported_environment(cfg: Config) -> dict[str, str]:
    """What the processes the helper starts (cmd, reload_cmd) get in their environment:
    the credential folder's path."""
    if not cfg.credential_folder:
        return {}
    folder = cfg.output_path(cfg.credential_folder)
    return {CREDENTIAL_FOLDER_ENV: os.path.abspath(folder)}


def select_by_spiffe_id(snapshot: X509Snapshot, spiffe_id: str) -> X509SVID:
    for svid in snapshot.svids:
        if svid.spiffe_id == spiffe_id:
            return svid
    raise Refused("spiffe_id_not_found", f"no SVID has SPIFFE ID {shown(spiffe_id)}")


class X509Renderer:
    """Renders the write set of each X.509 snapshot for `cfg`."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.pkcs12 = Pkcs12Memo()
        self.sequences = BundleSequences()
        self._seeded = False
        self._unnamed: set[str] = set()

    def render(self, snapshot: X509Snapshot, *, now: datetime | None = None) -> list[OutputFile]:
        """Every configured file. Raises Refused when an identity cannot be selected (the
        whole message is refused) and WriteError when the password file cannot be read."""
        cfg = self.cfg
        moment = now if now is not None else datetime.now(timezone.utc)
        svid = select_svid(snapshot, cfg.hint)
        extra = [self._select(snapshot, i) for i in range(len(cfg.x509_svids))]
        files: list[OutputFile] = []
        if cfg.x509_enabled:
            files += render_x509(snapshot, cfg, now=moment)
        opts = GoLayoutOptions(cfg.add_intermediates_to_bundle, cfg.include_federated_domains,
                               cfg.omit_expired, cfg.cert_file_mode, cfg.key_file_mode)
        for entry, chosen in zip(cfg.x509_svids, extra, strict=True):
            paths = (cfg.output_path(entry.svid_file_name),
                     cfg.output_path(entry.svid_key_file_name),
                     cfg.output_path(entry.svid_bundle_file_name))
            files += render_go_layout(snapshot, chosen, paths, opts, moment)
        if cfg.svid_combined_file_name:
            files.append(OutputFile(cfg.output_path(cfg.svid_combined_file_name),
                                    combined_pem(svid), cfg.key_file_mode, secret=True))
        if cfg.pkcs12_file_name:
            files.append(self._pkcs12(svid))
        if cfg.credential_folder:
            folder = cfg.output_path(cfg.credential_folder)
            self._report_unnamed(snapshot)
            files += render_credential_folder(snapshot, svid, folder, key_mode=cfg.key_file_mode,
                                              cert_mode=cfg.cert_file_mode,
                                              present=_trust_bundle_names(folder))
        if cfg.spiffe_bundle_map_file_name:
            self._seed_sequences()
            files.append(OutputFile(
                cfg.output_path(cfg.spiffe_bundle_map_file_name),
                bundle_map_json(snapshot.bundles, self.sequences, int(moment.timestamp())),
                cfg.cert_file_mode, secret=False))
        return files

    def _report_unnamed(self, snapshot: X509Snapshot) -> None:
        """Once per trust domain: its credential folder file cannot be named."""
        for td in sorted(snapshot.bundles):
            if not trust_bundle_name_fits(td) and td not in self._unnamed:
                self._unnamed.add(td)
                log.warning("credential_folder: the trust bundle of trust domain %s cannot "
                            "be named (its file name would be over %d bytes); skipped, the "
                            "other files are written", shown(td), NAME_MAX)

    def _select(self, snapshot: X509Snapshot, index: int) -> X509SVID:
        entry = self.cfg.x509_svids[index]
        try:
            if entry.hint:
                return select_svid(snapshot, entry.hint)
            return select_by_spiffe_id(snapshot, entry.spiffe_id)
        except Refused as exc:
            raise Refused(exc.rule, f"x509_svids[{index}]: {exc.detail}") from None

    def _password(self) -> bytes | None:
        if not self.cfg.pkcs12_password_file:
            return None
        try:
            return read_password_file(self.cfg)
        except ConfigError as exc:
            raise WriteError(f"{self.cfg.pkcs12_file_name}: {exc}") from None

    def _pkcs12(self, svid: X509SVID) -> OutputFile:
        path = self.cfg.output_path(self.cfg.pkcs12_file_name)
        password = self._password()
        if not self.pkcs12.data:
            existing = read_regular(path, MAX_SEED_BYTES)
            if existing:
                self.pkcs12.adopt(existing, svid, password)
        return OutputFile(path, self.pkcs12.render(svid, password), self.cfg.key_file_mode,
                          secret=True)

    def _seed_sequences(self) -> None:
        if self._seeded:
            return
        self._seeded = True
        existing = read_regular(self.cfg.output_path(self.cfg.spiffe_bundle_map_file_name),
                                MAX_SEED_BYTES)
        if existing:
            self.sequences.seed(existing)


def _trust_bundle_names(folder: Path) -> list[str]:
    """Trust bundle files already in the credential folder (to redact departed domains)."""
    try:
        return [entry.name for entry in os.scandir(folder)
                if trust_domain_of_file(entry.name) is not None
                and entry.is_file(follow_symlinks=False)]
    except OSError as exc:
        log.warning("cannot list %s: %s", folder, exc.strerror or exc)
        return []
