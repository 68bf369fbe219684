"""The embedded development Workload API server (test double and demo agent).

feed.py: what the agent hands out (options, SVIDs, bundles, JWTs, rotation, the streams
that follow them); agent.py: `DevAgent`, the gRPC server of a feed; runner.py:
`DevAgentThread`, an agent on its own loop in a thread; ca.py, jws.py: the CA and JWT
signing; cli.py: `spiffe-helper dev-agent`.
"""

from __future__ import annotations

from helper.devagent.agent import DevAgent
from helper.devagent.ca import DevCA, MintedSVID
from helper.devagent.feed import AgentOptions, PushTime
from helper.devagent.runner import DevAgentThread

__all__ = ["AgentOptions", "DevAgent", "DevAgentThread", "DevCA", "MintedSVID", "PushTime"]
