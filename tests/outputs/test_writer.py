from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pki
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from helper.errors import WriteError
from helper.outputs.pem import OutputFile
from helper.outputs.writer import TEMP_MARKER, AtomicWriter, is_temp_name, temp_name


@pytest.fixture
def umask0() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def out(path: Path, data: bytes, mode: int = 0o644, *, secret: bool = False) -> OutputFile:
    return OutputFile(path=path, data=data, mode=mode, secret=secret)


def temps_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if TEMP_MARKER in p.name)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_temp_name_shape(tmp_path: Path) -> None:
    name = temp_name(tmp_path / "svid.pem", "abc").name
    assert name == ".svid.pem.spiffe-helper-tmp.abc"
    assert is_temp_name(name)
    assert not is_temp_name("svid.pem")


def test_writes_files_with_exact_modes(tmp_path: Path, umask0: None) -> None:
    files = [
        out(tmp_path / "svid.pem", b"cert", 0o644),
        out(tmp_path / "svid_key.pem", b"key", 0o600, secret=True),
        out(tmp_path / "bundle.pem", b"bundle", 0o640),
    ]
    replaced = AtomicWriter().write_set(files)
    assert replaced == [f.path for f in files]
    for f in files:
        assert f.path.read_bytes() == f.data
        assert mode_of(f.path) == f.mode
    assert temps_in(tmp_path) == []


def test_modes_exact_under_restrictive_umask(tmp_path: Path) -> None:
    old = os.umask(0o777)
    try:
        AtomicWriter().write_set([out(tmp_path / "a.pem", b"a", 0o644)])
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "a.pem") == 0o644


def test_mode_fixed_on_existing_file_with_same_content(tmp_path: Path, umask0: None) -> None:
    target = tmp_path / "key.pem"
    target.write_bytes(b"key")
    target.chmod(0o666)
    writer = AtomicWriter()
    assert writer.write_set([out(target, b"key", 0o600)]) == [target]
    assert mode_of(target) == 0o600
    # somebody else loosens it again: the cache notices
    target.chmod(0o644)
    assert writer.write_set([out(target, b"key", 0o600)]) == [target]
    assert mode_of(target) == 0o600


def test_temp_is_created_private_whatever_the_umask(tmp_path: Path, umask0: None) -> None:
    fd, temp = AtomicWriter()._open_temp(tmp_path / "key.pem")
    try:
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        assert is_temp_name(temp.name)
        assert temp.parent == tmp_path
    finally:
        os.close(fd)
        temp.unlink()


def test_symlink_at_target_is_replaced_not_followed(tmp_path: Path) -> None:
    pointee = tmp_path / "precious"
    pointee.write_bytes(b"do not touch")
    pointee.chmod(0o600)
    target = tmp_path / "svid.pem"
    target.symlink_to(pointee)
    assert AtomicWriter().write_set([out(target, b"cert", 0o644)]) == [target]
    assert stat.S_ISREG(os.lstat(target).st_mode)
    assert target.read_bytes() == b"cert"
    assert pointee.read_bytes() == b"do not touch"
    assert mode_of(pointee) == 0o600


def test_symlink_at_target_with_equal_content_is_still_replaced(tmp_path: Path) -> None:
    pointee = tmp_path / "elsewhere"
    pointee.write_bytes(b"cert")
    pointee.chmod(0o644)
    target = tmp_path / "svid.pem"
    target.symlink_to(pointee)
    assert AtomicWriter().write_set([out(target, b"cert", 0o644)]) == [target]
    assert not target.is_symlink()


class ScriptedTokens(AtomicWriter):
    """An AtomicWriter whose temp names come from a fixed list (to plant things there)."""

    def __init__(self, tokens: list[str]) -> None:
        super().__init__()
        self.tokens = list(tokens)

    def _new_token(self) -> str:
        return self.tokens.pop(0)


def test_symlink_planted_at_temp_name_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "svid_key.pem"
    pointee = tmp_path / "victim"
    pointee.write_bytes(b"victim")
    planted = temp_name(target, "planted")
    planted.symlink_to(pointee)
    dangling = temp_name(target, "dangling")
    dangling.symlink_to(tmp_path / "would-be-created")
    writer = ScriptedTokens(["planted", "dangling", "fresh"])
    assert writer.write_set([out(target, b"secret key", 0o600, secret=True)]) == [target]
    assert target.read_bytes() == b"secret key"
    assert pointee.read_bytes() == b"victim"
    assert not (tmp_path / "would-be-created").exists()
    assert planted.is_symlink()
    assert dangling.is_symlink()
    assert not temp_name(target, "fresh").exists()


def test_gives_up_when_no_temp_name_is_free(tmp_path: Path) -> None:
    target = tmp_path / "svid.pem"
    temp_name(target, "x").write_bytes(b"")
    with pytest.raises(WriteError, match=r"svid\.pem.*EEXIST"):
        ScriptedTokens(["x"] * 100).write_set([out(target, b"cert")])


def test_unchanged_content_is_skipped(tmp_path: Path) -> None:
    target = tmp_path / "svid.pem"
    writer = AtomicWriter()
    assert writer.write_set([out(target, b"cert")]) == [target]
    before = os.lstat(target)
    assert writer.write_set([out(target, b"cert")]) == []
    assert os.lstat(target).st_ino == before.st_ino
    # a fresh writer (no cache, e.g. after a restart) compares what is on disk
    assert AtomicWriter().write_set([out(target, b"cert")]) == []
    assert os.lstat(target).st_ino == before.st_ino


def test_changed_content_gives_new_inode(tmp_path: Path) -> None:
    target = tmp_path / "svid.pem"
    writer = AtomicWriter()
    writer.write_set([out(target, b"cert one")])
    before = os.lstat(target).st_ino
    assert writer.write_set([out(target, b"cert two")]) == [target]
    assert os.lstat(target).st_ino != before
    assert target.read_bytes() == b"cert two"


def test_in_place_edit_with_same_size_and_mtime_is_noticed(tmp_path: Path) -> None:
    target = tmp_path / "svid.pem"
    writer = AtomicWriter()
    writer.write_set([out(target, b"AAAA")])
    st = os.lstat(target)
    with open(target, "r+b") as f:
        f.write(b"BBBB")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert writer.write_set([out(target, b"AAAA")]) == [target]
    assert target.read_bytes() == b"AAAA"


def test_only_changed_files_of_a_set_are_replaced(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    writer = AtomicWriter()
    writer.write_set([out(a, b"1"), out(b, b"1")])
    assert writer.write_set([out(a, b"1"), out(b, b"2")]) == [b]


def test_fifo_at_target_is_replaced_without_blocking(tmp_path: Path) -> None:
    target = tmp_path / "svid.pem"
    os.mkfifo(target)
    assert AtomicWriter().write_set([out(target, b"cert")]) == [target]
    assert target.read_bytes() == b"cert"


@pytest.mark.parametrize("bad_parent", ["regular file", "missing directory"])
def test_failure_mid_set_leaves_old_files_and_no_temps(tmp_path: Path, bad_parent: str) -> None:
    good_dir = tmp_path / "certs"
    good_dir.mkdir()
    cert, key = good_dir / "svid.pem", good_dir / "svid_key.pem"
    writer = AtomicWriter()
    writer.write_set([out(cert, b"old cert"), out(key, b"old key", 0o600)])
    inodes = (os.lstat(cert).st_ino, os.lstat(key).st_ino)
    if bad_parent == "regular file":
        blocker = tmp_path / "not-a-dir"
        blocker.write_bytes(b"")
        bad_target = blocker / "bundle.pem"
        code = "ENOTDIR"
    else:
        bad_target = tmp_path / "missing" / "bundle.pem"
        code = "ENOENT"
    files = [out(cert, b"new cert"), out(key, b"new key", 0o600), out(bad_target, b"bundle")]
    with pytest.raises(WriteError) as info:
        writer.write_set(files)
    message = str(info.value)
    assert str(bad_target) in message
    assert code in message
    assert "new key" not in message
    assert cert.read_bytes() == b"old cert"
    assert key.read_bytes() == b"old key"
    assert (os.lstat(cert).st_ino, os.lstat(key).st_ino) == inodes
    assert temps_in(good_dir) == []
    # and the next attempt, with the problem gone, writes everything
    assert writer.write_set(files[:2]) == [cert, key]


def test_directory_at_a_target_is_refused_before_anything_is_replaced(tmp_path: Path) -> None:
    cert, key = tmp_path / "svid.pem", tmp_path / "svid_key.pem"
    writer = AtomicWriter()
    writer.write_set([out(cert, b"old cert"), out(key, b"old key", 0o600)])
    key.unlink()
    key.mkdir()
    with pytest.raises(WriteError, match=r"svid_key\.pem.*EISDIR.*no file of the set"):
        writer.write_set([out(cert, b"new cert"), out(key, b"new key", 0o600)])
    assert cert.read_bytes() == b"old cert"  # the certificate did not move on alone
    assert temps_in(tmp_path) == []


class PlantsDirectoryAfterTemps(AtomicWriter):
    """An attacker who wins the race: the directory appears after the temps are written."""

    def __init__(self, blocked: Path) -> None:
        super().__init__()
        self.blocked = blocked

    def _write_temps(self, files):  # type: ignore[no-untyped-def]
        pending = super()._write_temps(files)
        self.blocked.mkdir()
        (self.blocked / "occupant").write_bytes(b"")  # a non-empty directory: rename fails
        return pending


def test_rename_failure_reports_and_cleans_up(tmp_path: Path) -> None:
    cert = tmp_path / "svid.pem"
    blocked = tmp_path / "bundle.pem"
    with pytest.raises(WriteError, match=r"bundle\.pem.*already replaced: .*svid\.pem"):
        PlantsDirectoryAfterTemps(blocked).write_set([out(cert, b"cert"), out(blocked, b"b")])
    assert temps_in(tmp_path) == []
    assert cert.read_bytes() == b"cert"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_owner_and_group(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    writer = AtomicWriter(owner=4321, group=8765)
    assert writer.write_set([out(target, b"key", 0o640, secret=True)]) == [target]
    st = os.lstat(target)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4321, 8765, 0o640)
    assert writer.write_set([out(target, b"key", 0o640, secret=True)]) == []
    os.chown(target, 0, 0)
    assert writer.write_set([out(target, b"key", 0o640, secret=True)]) == [target]
    assert (os.lstat(target).st_uid, os.lstat(target).st_gid) == (4321, 8765)


def test_log_names_path_and_mode_never_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAsecret\n-----END PRIVATE KEY-----\n"
    target = tmp_path / "svid_key.pem"
    with caplog.at_level(logging.INFO, logger="spiffe_helper.writer"):
        AtomicWriter().write_set([out(target, secret, 0o600, secret=True)])
    lines = [r.getMessage() for r in caplog.records if r.name == "spiffe_helper.writer"]
    assert len(lines) == 1
    assert str(target) in lines[0]
    assert "0600" in lines[0]
    assert "MIGHAgEAsecret" not in caplog.text


def test_cleanup_stale(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    stale = [temp_name(one / "svid.pem", "dead1"), temp_name(two / "svid_key.pem", "dead2")]
    for p in stale:
        p.write_bytes(b"half")
    keep_file = one / "svid.pem"
    keep_file.write_bytes(b"cert")
    keep_hidden = one / ".hidden"
    keep_hidden.write_bytes(b"x")
    pointee = tmp_path / "pointee"
    pointee.write_bytes(b"p")
    link = temp_name(one / "bundle.pem", "link")
    link.symlink_to(pointee)
    subdir = temp_name(one / "dir", "d")
    subdir.mkdir()
    removed = AtomicWriter().cleanup_stale([one, two, tmp_path / "missing"])
    assert sorted(removed) == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert keep_file.exists()
    assert keep_hidden.exists()
    assert link.is_symlink()
    assert pointee.read_bytes() == b"p"
    assert subdir.is_dir()


def test_readers_never_see_partial_files(tmp_path: Path) -> None:
    ca = pki.TrustDomainCA.create("example.org")
    versions = []
    for i in range(2):
        leaf = ca.leaf(f"/w{i}")
        versions.append(
            b"".join(
                c.cert.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca.intermediate)
            )
        )
    target = tmp_path / "svid.pem"
    writer = AtomicWriter()
    writer.write_set([out(target, versions[0])])

    done = threading.Event()
    first_read = threading.Event()
    reads = 0
    failures: list[str] = []

    def reader() -> None:
        nonlocal reads
        while not done.is_set():
            data = target.read_bytes()
            try:
                certs = x509.load_pem_x509_certificates(data)
                if len(certs) != 2 or data not in versions:
                    failures.append(f"read {len(data)} bytes, {len(certs)} certs")
            except ValueError as exc:
                failures.append(f"unparsable read of {len(data)} bytes: {exc}")
            reads += 1
            first_read.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        assert first_read.wait(timeout=10)
        for i in range(200):
            assert writer.write_set([out(target, versions[(i + 1) % 2])]) == [target]
    finally:
        done.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert failures == []
    assert reads > 0
    assert temps_in(tmp_path) == []
