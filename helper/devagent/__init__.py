"""The embedded development Workload API server (test double and demo agent)."""

from __future__ import annotations

from helper.devagent.ca import DevCA, MintedSVID
from helper.devagent.server import DevAgent, DevAgentThread, PushTime

__all__ = ["DevAgent", "DevAgentThread", "DevCA", "MintedSVID", "PushTime"]
