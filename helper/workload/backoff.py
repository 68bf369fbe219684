"""Retry delays: exponential, capped, jittered. Pure logic, no sleeping here."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays of `initial * factor**n`, capped at `cap`, each scaled by a random factor in
    [1 - jitter, 1 + jitter] (never above `cap`). `reset()` after any good message."""

    initial: float = 1.0
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, repr=False)
    attempts: int = 0

    def next_delay(self) -> float:
        base = min(self.cap, self.initial * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        if self.jitter:
            base *= self.rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return min(self.cap, base)

    def reset(self) -> None:
        self.attempts = 0


def workload_api_backoff() -> Backoff:
    """The Workload API reconnect policy: about 1 s doubling to a 30 s cap, with jitter."""
    return Backoff(initial=1.0, cap=30.0, factor=2.0, jitter=0.2)
