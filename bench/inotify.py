"""Linux inotify through ctypes: which names were renamed into a directory.

Used by bench/observe.py, a separate process, so that the moment an event is read is not
delayed by the benchmark's own threads (the dev-agent runs in the benchmark process).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from types import TracebackType

IN_MOVED_TO = 0x00000080
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name


class Inotify:
    """An inotify instance watching one directory for `mask` events."""

    def __init__(self, directory: str, mask: int = IN_MOVED_TO) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = libc.inotify_init1(IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd
        wd = libc.inotify_add_watch(fd, os.fsencode(directory), ctypes.c_uint32(mask))
        if wd < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {directory}: {os.strerror(err)}")

    def read(self) -> list[tuple[int, str]]:
        """Block until events arrive; (mask, name) for each."""
        data = os.read(self.fd, 64 * 1024)
        events: list[tuple[int, str]] = []
        offset = 0
        while offset + _EVENT.size <= len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            start = offset + _EVENT.size
            name = data[start : start + length].rstrip(b"\0").decode(errors="replace")
            events.append((mask, name))
            offset = start + length
        return events

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Inotify:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
