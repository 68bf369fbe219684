"""When to start a crashed child again, and when to give up (``on_cmd_exit = "restart"``).

Pure logic: the caller passes the clock (monotonic seconds), nothing sleeps here.

* The first restart waits ``initial`` (1 s); each further one doubles, up to ``cap`` (30 s).
* A child that stayed up ``reset_after`` (60 s) or longer was healthy: the delay starts
  again from ``initial``.
* The ``max_crashes``-th (10th) exit inside ``window`` (5 minutes) means a crash loop:
  give up (the supervisor then ends the helper, see ``helper/supervise/supervisor.py``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class RestartPolicy:
    initial: float = 1.0
    cap: float = 30.0
    factor: float = 2.0
    reset_after: float = 60.0
    max_crashes: int = 10
    window: float = 300.0
    _attempts: int = field(default=0, init=False, repr=False)
    _crashes: deque[float] = field(default_factory=deque, init=False, repr=False)

    def after_exit(self, *, started: float, ended: float) -> float | None:
        """The delay before the next start of a child that ran from `started` to `ended`;
        None when the child has crashed too often and the supervisor must give up."""
        if ended - started >= self.reset_after:
            self._attempts = 0
        self._crashes.append(ended)
        while self._crashes and ended - self._crashes[0] >= self.window:
            self._crashes.popleft()
        if len(self._crashes) >= self.max_crashes:
            return None
        delay = min(self.cap, self.initial * self.factor ** min(self._attempts, 64))
        self._attempts += 1
        return delay

    @property
    def recent_crashes(self) -> int:
        """Exits counted in the current window."""
        return len(self._crashes)
