"""Reading small files that someone else may control, without ever blocking.

A file the helper reads after start-up (the ``pid_file_name`` file, the PKCS#12 password
file, outputs read back at start-up) may have been replaced by anyone who can write its
directory. `read_small_file` opens it with ``O_NONBLOCK`` (a FIFO opens at once instead of
waiting for a writer), ``O_NOCTTY`` and ``O_CLOEXEC``, then insists on a regular file
(``fstat``) and reads at most `limit` bytes. Anything else raises `UnreadableFile` (a
ValueError) with a one-line reason that never quotes the file's contents, or OSError when
it cannot be opened at all. Callers on the event loop run it in a thread.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class UnreadableFile(ValueError):
    """The path is not a regular file, or it is larger than allowed."""


class TooLarge(UnreadableFile):
    """The file holds more than the limit."""


@dataclass(frozen=True)
class SmallFile:
    data: bytes
    stat: os.stat_result  # of the file that was read (fstat of the open descriptor)


def file_kind(mode: int) -> str:
    """'a FIFO', 'a directory', ... for a non-regular `st_mode`."""
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))
    return next((name for test, name in kinds if test(mode)), "not a file")


def read_small_file(path: str | os.PathLike[str], limit: int, *,
                    follow_symlinks: bool = True) -> SmallFile:
    """The bytes of the regular file at `path`; UnreadableFile when it is something else
    or holds more than `limit` bytes, OSError when it cannot be opened or read."""
    flags = _FLAGS | (0 if follow_symlinks else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFile(f"not a regular file ({file_kind(st.st_mode)})")
        if st.st_size > limit:
            raise TooLarge(f"larger than {limit} bytes")
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, limit + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:  # grew while being read
            raise TooLarge(f"larger than {limit} bytes")
        return SmallFile(b"".join(chunks), st)
    finally:
        os.close(fd)
