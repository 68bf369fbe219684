"""Validated identity snapshots: what the Workload API stream yields after validation.

Nothing in here does I/O. A snapshot only exists once every rule in `helper.identity.x509`
has passed, so everything downstream (rendering, writing, reloading) can trust it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


@dataclass(frozen=True)
class X509SVID:
    """One validated X.509-SVID: the leaf first in `chain`, then intermediates."""

    spiffe_id: str
    trust_domain: str
    chain: tuple[x509.Certificate, ...]
    private_key: PrivateKeyTypes = field(repr=False)
    private_key_der: bytes = field(repr=False)  # PKCS#8 DER, exactly as received
    hint: str = ""

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        return self.chain[1:]


@dataclass(frozen=True)
class X509Snapshot:
    """A complete X.509 context: every SVID of the workload and every trust bundle.

    `bundles` maps trust domain *names* (``example.org``, never ``spiffe://...``) to
    their X.509 authorities, the SVIDs' own trust domains and federated ones alike.
    `federated` names the trust domains that came in as federated bundles; a federated
    trust domain may have no authorities (an empty bundle).
    """

    svids: tuple[X509SVID, ...]
    bundles: Mapping[str, tuple[x509.Certificate, ...]]
    federated: frozenset[str] = frozenset()
    # Federated bundles left out because they were malformed: (map key as sent, reason).
    dropped: tuple[tuple[str, str], ...] = ()

    @property
    def default(self) -> X509SVID:
        return self.svids[0]
