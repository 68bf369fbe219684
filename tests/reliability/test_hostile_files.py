"""Hostile things in cert_dir (issue 8, items 8 and 9): symlinks planted at the output and
temp paths, a directory planted at an output path, and a watcher that looks for a key file
readable by group or others at any moment, under umask 000. The real CLI."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import stat
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

from relutil import (
    FILES,
    KEY,
    consistent_serial,
    disk_state,
    first_write,
    serial_of,
    temps,
    write_conf,
)
from util import HelperProcess, mode, run_helper, wait_for

from helper.devagent import DevAgentThread
from helper.outputs.writer import TEMP_MARKER


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


SECRET_OUTPUTS = (KEY, "combined.pem", "keystore.p12", "db.token",
                  "credential-bundle.private-key.x509.pem")
ALL_OUTPUTS = (
    'svid_combined_file_name = "combined.pem"\n'
    'pkcs12_file_name = "keystore.p12"\n'
    'credential_folder = "spiffe"\n'
    'jwt_svids = [{jwt_audience = "db", jwt_svid_file_name = "db.token"}]\n'
    'jwt_bundle_file_name = "jwt_bundle.json"\n'
    'spiffe_bundle_map_file_name = "bundle_map.json"\n'
)
# every file the helper writes for ALL_OUTPUTS (the X.509-derived ones are rewritten on
# each rotation; the JWT ones when the token is renewed)
X509_OUTPUTS = (*FILES, "combined.pem", "keystore.p12", "bundle_map.json",
                "spiffe/credential-bundle.private-key.x509.pem",
                "spiffe/example.org.spiffe-trust-bundle.x509.pem")
EVERY_OUTPUT = (*X509_OUTPUTS, "db.token", "jwt_bundle.json")

def plant_victims(tmp_path: Path, names: tuple[str, ...]) -> dict[Path, tuple[bytes, int, int]]:
    """Files outside cert_dir an attacker wants overwritten, one per output name:
    path -> (bytes, mode, mtime)."""
    victims = tmp_path / "victims"
    victims.mkdir()
    state = {}
    for name in names:
        victim = victims / f"{name.replace('/', '_')}.victim"
        victim.write_bytes(b"precious data of " + name.encode())
        victim.chmod(0o644)
        st = victim.stat()
        state[victim] = (victim.read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return state


def victim_state(victims: dict[Path, tuple[bytes, int, int]]) -> dict[Path, tuple[bytes, int, int]]:
    return {v: (v.read_bytes(), stat.S_IMODE(v.stat().st_mode), v.stat().st_mtime_ns)
            for v in victims}


def test_symlinks_planted_at_every_output_path_are_replaced_never_written_through(
        tmp_path: Path, certs: Path, agent: DevAgentThread) -> None:
    (certs / "spiffe").mkdir()
    victims = plant_victims(tmp_path, EVERY_OUTPUT)
    before = victim_state(victims)
    for name, victim in zip(EVERY_OUTPUT, victims, strict=True):
        (certs / name).symlink_to(victim)
    # and a dangling one at a temp-shaped name: must not be followed nor created through
    nowhere = tmp_path / "victims" / "created-through-a-symlink"
    (certs / f".{KEY}{TEMP_MARKER}0000000000000000").symlink_to(nowhere)
    conf = write_conf(tmp_path, agent.socket_path, certs, ALL_OUTPUTS)
    result = run_helper("-config", str(conf), "-daemon-mode=false")
    assert result.returncode == 0, result.stderr
    for name in EVERY_OUTPUT:
        assert stat.S_ISREG(os.lstat(certs / name).st_mode), name
    assert consistent_serial(certs) == serial_of(agent.current)
    assert mode(certs / KEY) == 0o600
    assert victim_state(victims) == before
    assert not nowhere.exists()


def test_symlink_planted_between_rotations_is_replaced_at_the_next_one(
        tmp_path: Path, certs: Path, agent: DevAgentThread) -> None:
    (certs / "spiffe").mkdir()
    victims = plant_victims(tmp_path, X509_OUTPUTS)
    before = victim_state(victims)
    conf = write_conf(tmp_path, agent.socket_path, certs, ALL_OUTPUTS)
    with HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
        first_write(certs)
        wait_for(lambda: all((certs / n).exists() for n in EVERY_OUTPUT), 10, "every output")
        for name, victim in zip(X509_OUTPUTS, victims, strict=True):
            planted = certs / f"{name}.planting"
            planted.symlink_to(victim)
            planted.rename(certs / name)  # atomically swap the output for a symlink
        good = agent.rotate()
        wait_for(lambda: consistent_serial(certs) == serial_of(good), 10, "the next rotation")
        wait_for(lambda: all(stat.S_ISREG(os.lstat(certs / n).st_mode) for n in X509_OUTPUTS),
                 10, "every output a regular file again")
        assert victim_state(victims) == before
        assert helper.stop() == 0


def test_directory_planted_at_an_output_path_is_refused_clearly_and_nothing_is_replaced(
        tmp_path: Path, certs: Path, agent: DevAgentThread) -> None:
    conf = write_conf(tmp_path, agent.socket_path, certs)
    with HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
        first_write(certs)
        before = disk_state(certs)
        (certs / KEY).unlink()
        (certs / KEY).mkdir()
        (certs / KEY / "occupant").write_bytes(b"")
        agent.rotate()
        wait_for(lambda: "writing X.509-SVID files failed" in helper.output(), 10, "refusal")
        line = next(x for x in helper.output().splitlines() if "files failed" in x)
        assert str(certs / KEY) in line
        assert "no file of the set was replaced" in line, line
        # the certificate must not move on without its key
        after = disk_state_without_key(certs)
        assert after == {n: v for n, v in before.items() if n != KEY}
        assert temps(certs) == []
        # once the directory is gone the next rotation writes the whole set
        (certs / KEY / "occupant").unlink()
        (certs / KEY).rmdir()
        good = agent.rotate()
        wait_for(lambda: consistent_serial(certs) == serial_of(good), 10, "the next rotation")
        assert helper.stop() == 0


def disk_state_without_key(cert_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {n: ((cert_dir / n).read_bytes(), os.lstat(cert_dir / n).st_ino)
            for n in FILES if n != KEY}


# --- item 9: key files are never readable by group or others ---------------------------------

IN_ATTRIB, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x4, 0x8, 0x80, 0x100
_EVENT = struct.Struct("iIII")


class ModeWatcher(threading.Thread):
    """Stats every entry of some directories the moment inotify reports it created,
    chmodded, written or renamed in, and records the modes seen for secret files (by name)
    and their temps."""

    def __init__(self, directories: list[Path], secret_names: tuple[str, ...]) -> None:
        super().__init__(daemon=True)
        self.secret_names = secret_names
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        mask = IN_CREATE | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_TO
        self.directories: dict[int, Path] = {}
        for directory in directories:
            wd = libc.inotify_add_watch(self.fd, str(directory).encode(), mask)
            assert wd >= 0, os.strerror(ctypes.get_errno())
            self.directories[wd] = directory
        self.stop = threading.Event()
        self.secret_modes: list[tuple[str, int]] = []  # (name, mode) of secrets and their temps
        self.temp_names: set[str] = set()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                ready, _, _ = select.select([self.fd], [], [], 0.05)
                if ready:
                    self._handle(os.read(self.fd, 1 << 16))
        finally:
            os.close(self.fd)

    def _handle(self, data: bytes) -> None:
        offset = 0
        while offset < len(data):
            wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size: offset + _EVENT.size + length]
            offset += _EVENT.size + length
            name = raw.split(b"\0", 1)[0].decode()
            if TEMP_MARKER in name:
                self.temp_names.add(name)
            if not name.lstrip(".").startswith(self.secret_names):
                continue
            try:
                st = os.lstat(self.directories[wd] / name)
            except FileNotFoundError:
                continue  # already renamed into place: the target's own event follows
            self.secret_modes.append((name, stat.S_IMODE(st.st_mode)))


ROTATIONS = 40


def test_key_files_are_never_readable_by_group_or_others_even_with_umask_000(
        tmp_path: Path, certs: Path, agent: DevAgentThread) -> None:
    """Every file holding a private key or a token: the Go trio's key, the combined PEM, the
    PKCS#12 keystore, the credential folder's key file and the JWT-SVID."""
    (certs / "spiffe").mkdir()
    conf = write_conf(tmp_path, agent.socket_path, certs, ALL_OUTPUTS)
    watcher = ModeWatcher([certs, certs / "spiffe"], SECRET_OUTPUTS)
    watcher.start()
    try:
        with umask(0), HelperProcess("-config", str(conf), log=tmp_path / "helper.log") as helper:
            first_write(certs)
            for _ in range(ROTATIONS):
                good = agent.rotate()
                wait_for(lambda g=good: consistent_serial(certs) == serial_of(g), 10, "rotation")
            wait_for(lambda: (certs / "db.token").exists(), 10, "the JWT-SVID")
            for path in (certs / KEY, certs / "combined.pem", certs / "keystore.p12",
                         certs / "db.token", certs / "jwt_bundle.json",
                         certs / "spiffe" / "credential-bundle.private-key.x509.pem"):
                assert mode(path) == 0o600, path
            assert mode(certs / "svid.pem") == 0o644  # umask 000 did not loosen the others
            assert helper.stop() == 0
    finally:
        watcher.stop.set()
        watcher.join(5)
    exposed = [(n, oct(m)) for n, m in watcher.secret_modes if m & 0o077]
    assert exposed == []
    for name in SECRET_OUTPUTS:
        seen = [n for n, _ in watcher.secret_modes if n.lstrip(".").startswith(name)]
        assert seen, f"the watcher never saw {name}: the test proves nothing for it"
    key_temps_seen = [n for n, _ in watcher.secret_modes if TEMP_MARKER in n]
    assert key_temps_seen, "the watcher never caught a secret temp file: the test proves nothing"
    # temp names are not predictable: one write per rotation, a new random name each time
    key_temp_names = {n for n in watcher.temp_names if n.startswith(f".{KEY}")}
    assert len(key_temp_names) == ROTATIONS + 1, sorted(key_temp_names)
