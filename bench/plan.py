"""How many repetitions and how long: the full run and the --quick smoke run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    name: str
    oneshot_pairs: int
    warmup_rotations: int
    rotations: int  # rotation latency and rotation -> child signalled, each
    idle_seconds: float
    idle_windows: int
    large_pushes: int
    endurance_rotations: int
    child_start_timeout: float


FULL = Plan(name="full", oneshot_pairs=21, warmup_rotations=10, rotations=200,
            idle_seconds=60.0, idle_windows=6, large_pushes=7, endurance_rotations=10_000,
            child_start_timeout=15.0)

QUICK = Plan(name="quick", oneshot_pairs=3, warmup_rotations=3, rotations=30,
             idle_seconds=3.0, idle_windows=3, large_pushes=2, endurance_rotations=300,
             child_start_timeout=10.0)
