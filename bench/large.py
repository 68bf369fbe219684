"""Large snapshot: one X509SVIDResponse carrying 1000 federated bundles.

Roots for 1000 trust domains are minted by DevCA. The helper runs with
include_federated_domains = true, so every push rewrites the bundle file with all 1000
authorities. Pushes alternate between two messages that differ in one trust domain's
root (so each one changes the file) and carry the unchanged SVID; the figure is the time
from the agent's publish timestamp to the bundle file renamed into place.
"""

from __future__ import annotations

from bench.plan import Plan
from bench.report import Row, ms, verdict
from bench.stats import spread
from bench.workspace import BUNDLE, EVENT_TIMEOUT, Workspace, started
from helper._proto import workload_pb2
from helper.devagent import DevCA

TRUST_DOMAINS = 1000
TARGET_S = 0.200


def messages(base: workload_pb2.X509SVIDResponse) -> tuple[workload_pb2.X509SVIDResponse, ...]:
    """Two messages: `base` plus 1000 federated bundles, differing in the first one's root."""
    cas = [DevCA(f"fed{i:04d}.bench.example") for i in range(TRUST_DOMAINS)]
    spare = DevCA(cas[0].trust_domain)
    out = []
    for first in (cas[0], spare):
        message = workload_pb2.X509SVIDResponse()
        message.CopyFrom(base)
        for ca in (first, *cas[1:]):
            message.federated_bundles[ca.id] = ca.bundle_der()
        out.append(message)
    return tuple(out)


def run(ws: Workspace, plan: Plan) -> list[Row]:
    certs = ws.new_dir("large")
    config = ws.write_config("large.conf", certs, "include_federated_domains = true\n")
    variants = messages(ws.agent.current)
    helper, observer = started(ws, config, "large.log", certs)
    samples: list[float] = []
    with helper, observer:
        for i in range(plan.large_pushes):
            observer.drain()
            ws.agent.push(variants[i % 2])
            pushed = ws.last_push_ns()
            seen = observer.wait_for((BUNDLE,), EVENT_TIMEOUT, "large snapshot", helper)
            samples.append((seen[BUNDLE] - pushed) / 1e9)
    ws.agent.rotate()  # back to a small current message for the figures that follow
    result = spread(samples)
    measured = (f"{ms(result.median)} (min {ms(result.low)}, max {ms(result.high)}, "
                f"{result.n} pushes)")
    return [Row(f"large snapshot: {TRUST_DOMAINS} federated bundles → bundle file written",
                measured, f"≤ {TARGET_S * 1000:g} ms", verdict(result.median <= TARGET_S),
                {"seconds": result.as_dict()})]
