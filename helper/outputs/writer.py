"""AtomicWriter: replace a set of output files so that readers only ever see whole files.

For every file that changed, a temp file is created beside the target (O_EXCL|O_NOFOLLOW,
mode 0600 from the start, so no umask can expose it), filled, given its mode (and owner),
fsynced and closed. Only when every temp of the set is complete are they renamed over
their targets, in the order given (callers pass cert, key, bundle, so the key and cert
renames are adjacent), and each directory is fsynced once. A failure before the renames
removes every temp and leaves every old file as it was.

rename() replaces a symlink planted at a target instead of writing through it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import stat
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from helper.errors import WriteError
from helper.outputs.pem import OutputFile

log = logging.getLogger("spiffe_helper.writer")

TEMP_MARKER = ".spiffe-helper-tmp."
TEMP_ATTEMPTS = 16
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def describe_os_error(exc: OSError) -> str:
    """`No space left on device (ENOSPC)`: the errno's text and symbolic name."""
    if exc.errno is None:
        return str(exc)
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    return f"{os.strerror(exc.errno)} ({name})"


NAME_MAX = 255  # bytes in one file name (Linux, every common file system)


def name_bytes(name: str) -> int:
    """The length of `name` on disk."""
    return len(name.encode("utf-8", "surrogatepass"))  # escaped bytes: counted high


def temp_name(target: Path, token: str) -> Path:
    """The temp file beside `target`: ``.NAME.spiffe-helper-tmp.TOKEN``, with NAME cut
    short (at a character) so that the temp name fits NAME_MAX whenever NAME does."""
    name = target.name
    budget = NAME_MAX - name_bytes(f".{TEMP_MARKER}{token}")
    while name_bytes(name) > budget:
        name = name[:-1]
    return target.with_name(f".{name}{TEMP_MARKER}{token}")


def is_temp_name(name: str) -> bool:
    """True for names made by `temp_name`."""
    return name.startswith(".") and TEMP_MARKER in name


@dataclass(frozen=True)
class _Written:
    """What the last write left at a path, to skip the next identical one without a read."""

    digest: bytes
    st_dev: int
    st_ino: int
    st_size: int
    st_mtime_ns: int
    st_ctime_ns: int
    mode: int


@dataclass
class _Pending:
    file: OutputFile
    temp: Path


class AtomicWriter:
    """Writes sets of `OutputFile`s atomically; optionally chowns them to `owner`/`group`."""

    def __init__(self, *, owner: int | None = None, group: int | None = None) -> None:
        self.owner = owner
        self.group = group
        self._cache: dict[Path, _Written] = {}
        self._lock = threading.Lock()

    # --- public API ---------------------------------------------------------------------

    def write_set(self, files: Sequence[OutputFile]) -> list[Path]:
        """Write every file that differs from disk; returns the paths replaced.

        Raises WriteError naming the file and errno; when it is raised before any rename,
        no target was touched and no temp file is left behind.
        """
        with self._lock:
            changed = [f for f in files if not self._is_current(f)]
            _refuse_directories(changed)
            pending = self._write_temps(changed)
            replaced = self._rename_all(pending)
            self._sync_directories({p.parent for p in replaced})
            return replaced

    def remove(self, paths: Iterable[Path]) -> list[Path]:
        """Remove output files (an expired token); returns the paths removed.

        unlink(2) never follows a symlink: a link planted at a path is removed, its target
        is not touched. A missing file is fine; a directory is left alone and reported.
        Raises WriteError naming the file and errno when a removal fails.
        """
        with self._lock:
            removed: list[Path] = []
            for path in paths:
                self._cache.pop(path, None)
                try:
                    if stat.S_ISDIR(os.lstat(path).st_mode):
                        raise WriteError(f"cannot remove {path}: it is a directory")
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise WriteError(f"cannot remove {path}: {describe_os_error(exc)}") from None
                log.info("removed %s", path)
                removed.append(path)
            self._sync_directories({p.parent for p in removed})
            return removed

    def cleanup_stale(self, directories: Iterable[Path]) -> list[Path]:
        """Remove temp files left by a killed run (regular files only); returns them."""
        removed: list[Path] = []
        for directory in directories:
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
                    try:
                        os.unlink(entry.path)
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        log.warning("cannot remove %s: %s", entry.path, describe_os_error(exc))
                        continue
                    removed.append(Path(entry.path))
                    log.info("removed stale temp file %s", entry.path)
        return removed

    # --- skip check ---------------------------------------------------------------------

    def _owner_matches(self, st: os.stat_result) -> bool:
        return (self.owner is None or st.st_uid == self.owner) and (
            self.group is None or st.st_gid == self.group
        )

    def _is_current(self, file: OutputFile) -> bool:
        """True when the target already holds exactly `file` (content, mode, owner)."""
        try:
            st = os.lstat(file.path)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != file.mode:
            return False
        if not self._owner_matches(st) or st.st_size != len(file.data):
            return False
        digest = hashlib.sha256(file.data).digest()
        cached = self._cache.get(file.path)
        if cached is not None and cached == _record(digest, st, file.mode):
            return True
        if self._disk_content_equals(file):
            self._remember(file.path, digest, file.mode)
            return True
        return False

    def _disk_content_equals(self, file: OutputFile) -> bool:
        """Read the target (never through a symlink, never a FIFO) and compare."""
        try:
            fd = os.open(file.path, _READ_FLAGS)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != file.mode:
                return False
            if not self._owner_matches(st) or st.st_size != len(file.data):
                return False
            return _read_all(fd, len(file.data) + 1) == file.data
        except OSError:
            return False
        finally:
            os.close(fd)

    def _remember(self, path: Path, digest: bytes, mode: int) -> None:
        try:
            st = os.lstat(path)
        except OSError:
            self._cache.pop(path, None)
            return
        self._cache[path] = _record(digest, st, mode)

    # --- temps and renames --------------------------------------------------------------

    def _new_token(self) -> str:
        """The random part of a temp name."""
        return secrets.token_hex(8)

    def _open_temp(self, target: Path) -> tuple[int, Path]:
        """Create a fresh temp beside `target`, mode 0600; retries when a name exists."""
        for _ in range(TEMP_ATTEMPTS):
            temp = temp_name(target, self._new_token())
            try:
                return os.open(temp, _CREATE_FLAGS, 0o600), temp
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, "no free temp file name", str(target))

    def _fill_temp(self, fd: int, file: OutputFile) -> None:
        view = memoryview(file.data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if self.owner is not None or self.group is not None:
            os.fchown(
                fd,
                -1 if self.owner is None else self.owner,
                -1 if self.group is None else self.group,
            )
        os.fchmod(fd, file.mode)
        os.fsync(fd)

    def _write_temp(self, file: OutputFile, created: list[Path]) -> Path:
        fd, temp = self._open_temp(file.path)
        created.append(temp)
        try:
            self._fill_temp(fd, file)
        finally:
            os.close(fd)
        return temp

    def _write_temps(self, files: Sequence[OutputFile]) -> list[_Pending]:
        """Write every temp; on any failure remove them all and raise WriteError."""
        created: list[Path] = []
        pending: list[_Pending] = []
        for file in files:
            try:
                pending.append(_Pending(file, self._write_temp(file, created)))
            except OSError as exc:
                _remove_quietly(created)
                raise WriteError(
                    f"cannot write {file.path}: {describe_os_error(exc)}; "
                    "no file of the set was replaced", errno=exc.errno
                ) from None
            except BaseException:
                _remove_quietly(created)
                raise
        return pending

    def _rename_all(self, pending: Sequence[_Pending]) -> list[Path]:
        replaced: list[Path] = []
        for index, item in enumerate(pending):
            try:
                os.rename(item.temp, item.file.path)
            except OSError as exc:
                _remove_quietly([p.temp for p in pending[index:]])
                done = ", ".join(str(p) for p in replaced) or "none"
                raise WriteError(
                    f"cannot replace {item.file.path}: {describe_os_error(exc)}; "
                    f"already replaced: {done}", errno=exc.errno
                ) from None
            self._remember(item.file.path, hashlib.sha256(item.file.data).digest(), item.file.mode)
            log.info("wrote %s (mode %04o)", item.file.path, item.file.mode)
            replaced.append(item.file.path)
        return replaced

    def _sync_directories(self, directories: Iterable[Path]) -> None:
        """fsync each directory once so the renames survive a crash."""
        for directory in sorted(directories):
            try:
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                log.warning(
                    "files in %s are in place but the directory could not be synced: %s",
                    directory,
                    describe_os_error(exc),
                )


def _refuse_directories(files: Sequence[OutputFile]) -> None:
    """A directory planted at a target cannot be renamed over: refuse before anything is
    written, or the files renamed before it would leave, say, a certificate without its key."""
    for file in files:
        try:
            st = os.lstat(file.path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            raise WriteError(
                f"cannot write {file.path}: {describe_os_error(OSError(errno.EISDIR, ''))}; "
                "no file of the set was replaced", errno=errno.EISDIR
            )


def read_regular(path: Path, limit: int) -> bytes | None:
    """Up to `limit` bytes of the regular file at `path`, or None (missing, a symlink, a
    FIFO or anything else that is not a regular file, or unreadable). Never follows a
    symlink and never blocks on a FIFO."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return _read_all(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _record(digest: bytes, st: os.stat_result, mode: int) -> _Written:
    return _Written(
        digest=digest,
        st_dev=st.st_dev,
        st_ino=st.st_ino,
        st_size=st.st_size,
        st_mtime_ns=st.st_mtime_ns,
        st_ctime_ns=st.st_ctime_ns,
        mode=mode,
    )


def _read_all(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = os.read(fd, limit - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _remove_quietly(paths: Iterable[Path]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError as exc:
            log.warning("cannot remove temp file %s: %s", path, describe_os_error(exc))
