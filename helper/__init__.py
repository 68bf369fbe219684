"""spiffe-helper: a SPIFFE Workload API helper and process supervisor."""

__version__ = "0.1.0"
