"""The narrow interface between the core (helper/app.py) and what runs next to it.

A **pipeline** turns one kind of Workload API data into files (`X509Pipeline` in
helper/outputs/x509_pipeline.py, `JWTPipeline` in helper/outputs/jwt_pipeline.py). A
**feature** (supervisor, health listener, expiry timers, sd_notify, config watcher, ...)
reacts to what the pipelines did. Neither ever sees the core: each gets what it needs
through its constructor (the config, the `Status`, the child's environment, a callable
that asks for a config reload, ...), and the core calls it at these phases, in the order
of its feature tuple (shutdown in reverse):

==============  ================================================================================
``serve``       the feature's long-running task, started with the pipelines (daemon mode); an
                int ends the helper with that exit code, None just ends the task
``written``     after every X.509 write that reached disk, the first included
``ready``       once, when every pipeline has written its files once
``changed``     after a later X.509 write that changed files (after ``ready`` only)
``signal``      a captured signal among `signals`; an int ends the helper with that exit code
``reloading``   a config reload starts (before the file is read; sd_notify's RELOADING=1)
``reconfigure`` a valid, changed config is in force: (old, new)
``reloaded``    the reload is over, whatever its outcome (sd_notify's READY=1)
``shutdown``    on the way out, with the exit code so far; returns it (may replace it)
==============  ================================================================================

Every phase is a no-op by default: a feature overrides the ones it takes part in.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from helper.config import Config
from helper.identity.snapshot import X509Snapshot
from helper.workload.client import WorkloadClient

# Asks the core to read the config again and apply it (why, for the log line); True when a
# valid config was read. One reload runs at a time.
RequestReload = Callable[[str], Awaitable[bool]]


class Feature:
    """Something that runs next to the pipelines; every phase is a no-op by default."""

    # The signals whose `signal` phase this feature takes part in (captured by the core).
    signals: frozenset[signal.Signals] = frozenset()

    async def serve(self) -> int | None:
        return None

    async def written(self, pipeline: str, snapshot: X509Snapshot,
                      changed: Sequence[Path]) -> None:
        return None

    async def ready(self) -> None:
        return None

    async def changed(self, pipeline: str, snapshot: X509Snapshot,
                      changed: Sequence[Path]) -> None:
        return None

    async def signal(self, sig: signal.Signals) -> int | None:
        return None

    async def reloading(self) -> None:
        return None

    async def reconfigure(self, old: Config, new: Config) -> None:
        return None

    async def reloaded(self) -> None:
        return None

    async def shutdown(self, code: int) -> int:
        return code


@dataclass(frozen=True)
class PipelineEvents:
    """What a pipeline tells the core (the core hands one to each pipeline it creates)."""

    # After every X.509 write that reached disk, the first included: (snapshot, the paths
    # that changed). JWT writes are not reported: a token refresh every few minutes must
    # not reload the child (nor does the Go helper signal it for them).
    written: Callable[[X509Snapshot, Sequence[Path]], Awaitable[None]]
    # Once, after the pipeline's first complete write (every file it owns is on disk).
    first_write: Callable[[], Awaitable[None]]


class Pipeline(Protocol):
    """Turns one kind of Workload API data into files.

    `run(client, once=True)` returns after the first complete write (one-shot mode);
    with once=False it runs until cancelled. It raises WorkloadAPIError for final
    errors. It reports through the `PipelineEvents` it was created with.
    """

    @property
    def name(self) -> str: ...

    async def run(self, client: WorkloadClient, *, once: bool) -> None: ...

    def set_config(self, cfg: Config) -> None:
        """Put `cfg` in force for what comes next (a reload; nothing is written here)."""

    async def rewrite(self) -> None:
        """Write the current outputs again for the config in force (a reload): new
        names, modes, owner; writes are reported as after a rotation."""

    async def retire(self) -> None:
        """A reload turned this pipeline off: nothing is written any more, its files and
        health entries are removed."""
