"""SIGKILL of the helper during a rotation burst, 20 times (issue 8, item 5).

The kill points are chosen by a seeded generator: after a random delay, the moment any temp
file is visible, or the moment a temp of the key is visible. A reader thread parses every
output file all along. After each kill every file is complete and parseable on its own, and
the files that hold a key with its chain (the combined PEM, the credential folder's file)
always hold a matching pair; the next start removes the temp files the kill left and
restores a consistent set, the one the agent sends.
"""

from __future__ import annotations

import functools
import os
import random
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pki import is_leaf_key
from relutil import (
    FILES,
    KEY,
    consistent_serial,
    files_equal_message,
    parse_files,
    temps,
    write_conf,
)
from util import HelperProcess, wait_for

from helper.devagent import DevAgentThread
from helper.outputs.writer import TEMP_MARKER

# outputs that hold the key and its chain in one file: consistent at every moment
PAIRED = ("combined.pem", "spiffe/credential-bundle.private-key.x509.pem")
EXTRA = ('svid_combined_file_name = "combined.pem"\n'
         'credential_folder = "spiffe"\n')
SEED = 20240808
KILLS = 20
POINTS = ("random delay", "any temp visible", "key temp visible")


class Reader(threading.Thread):
    """Parses every output file, over and over, and records any that is not whole."""

    def __init__(self, cert_dir: Path) -> None:
        super().__init__(daemon=True)
        self.cert_dir = cert_dir
        self.stop = threading.Event()
        self.reads = 0
        self.bad: list[str] = []

    def run(self) -> None:
        checks = ([(name, assert_pair) for name in PAIRED]
                  + [(name, functools.partial(parse, name=name)) for name in FILES])
        while not self.stop.is_set():
            for name, check in checks:
                try:
                    data = (self.cert_dir / name).read_bytes()
                except FileNotFoundError:
                    continue
                self.reads += 1
                try:
                    check(data)
                except Exception as exc:  # a partial file fails to parse, or a mismatched pair
                    self.bad.append(f"{name}: {exc}")


def parse(data: bytes, name: str) -> None:
    """One output file on its own parses (the key as a key, the others as certificates)."""
    if name == KEY:
        serialization.load_pem_private_key(data, None)
    else:
        assert x509.load_pem_x509_certificates(data)


def assert_pair(pem: bytes) -> None:
    """One file, key then chain: the key is the leaf's."""
    key = serialization.load_pem_private_key(pem, None)
    leaf = x509.load_pem_x509_certificates(pem)[0]
    assert is_leaf_key(key, leaf)


class Burst(threading.Thread):
    """Rotates the agent's SVID as fast as it can mint, until stopped."""

    def __init__(self, agent: DevAgentThread) -> None:
        super().__init__(daemon=True)
        self.agent = agent
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.agent.rotate()


def wait_for_kill_point(point: str, rng: random.Random, cert_dir: Path) -> bool:
    """Busy-wait (no sleeping: the point is to land anywhere) until the chosen moment.
    False when the moment did not come within a bounded time (then we kill anyway)."""
    deadline = time.monotonic() + (rng.uniform(0.0, 0.15) if point == "random delay" else 3.0)
    marker = TEMP_MARKER if point == "any temp visible" else f".{KEY}{TEMP_MARKER}"
    while time.monotonic() < deadline:
        if point != "random delay" and any(marker in n for n in os.listdir(cert_dir)):
            return True
    return point == "random delay"


def test_sigkill_during_a_rotation_burst_never_leaves_a_broken_file_and_restart_repairs(
        tmp_path: Path, certs: Path, agent: DevAgentThread) -> None:
    rng = random.Random(SEED)
    (certs / "spiffe").mkdir()
    conf = write_conf(tmp_path, agent.socket_path, certs, EXTRA)
    reader = Reader(certs)
    reader.start()
    left_behind: list[str] = []
    landed = dict.fromkeys(POINTS, 0)
    cleaned = 0
    try:
        for run in range(KILLS + 1):
            with HelperProcess("-config", str(conf), log=tmp_path / f"helper{run}.log") as helper:
                # the (next) start restores a consistent set: the one the agent sends now
                current = agent.current
                wait_for(lambda m=current: files_equal_message(certs, m)
                         and not temps(certs) and not temps(certs / "spiffe"), 15,
                         f"start {run} to restore the set")  # (the set: the last rename)
                assert consistent_serial(certs) is not None
                for name in left_behind:
                    assert f"removed temp file {certs / name}" in helper.output(), name
                if run == KILLS:
                    assert helper.stop() == 0
                    break
                point = rng.choice(POINTS)
                agent.wait_streams(1)
                burst = Burst(agent)
                burst.start()
                try:
                    landed[point] += wait_for_kill_point(point, rng, certs)
                    helper.proc.kill()
                    helper.proc.wait(10)
                finally:
                    burst.stop.set()
                    burst.join(15)
                assert not burst.is_alive()
            parse_files(certs)  # each file whole and parseable right after the kill
            for name in PAIRED:
                assert_pair((certs / name).read_bytes())
            left_behind = temps(certs) + [f"spiffe/{n}" for n in temps(certs / "spiffe")]
            cleaned += len(left_behind)
    finally:
        reader.stop.set()
        reader.join(10)
    assert reader.bad == []
    assert reader.reads > 0
    # the kills really landed at the chosen moments, not only between writes
    assert landed["any temp visible"] + landed["key temp visible"] >= 3, landed
    assert cleaned > 0  # some kills left temp files, and the next start removed them
