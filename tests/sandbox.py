"""Run a command under the seccomp filters a systemd unit would give it, without systemd.

    python3 tests/sandbox.py UNIT [DROP-IN ...] -- COMMAND [ARG ...]

Loads, through libseccomp (ctypes; it is part of every systemd install), what systemd
installs for these settings of the unit, then execs COMMAND:

* `SystemCallFilter=` (groups expanded by `systemd-analyze syscall-filter`) with
  `SystemCallErrorNumber=` as the action for every other call;
* `MemoryDenyWriteExecute=yes`: mmap() with PROT_WRITE|PROT_EXEC, mprotect() and
  pkey_mprotect() adding PROT_EXEC, shmat() with SHM_EXEC fail with EPERM;
* `RestrictAddressFamilies=`: socket() of any other family fails with EAFNOSUPPORT;
* `SystemCallArchitectures=native`: libseccomp filters only the native architecture.

The caller sets no-new-privileges first (setpriv --no-new-privs), as systemd does for a
service that is not root; an unprivileged process cannot load a filter otherwise.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unitfile import setting, syscall_filter

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_GT = 6
SCMP_CMP_MASKED_EQ = 7
NR_SCMP_ERROR = -1
SHM_EXEC = 0o100000
AF_MAX = 46


def scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class Filter:
    def __init__(self, lib: ctypes.CDLL, default_action: int) -> None:
        self.lib = lib
        self.ctx = lib.seccomp_init(ctypes.c_uint32(default_action))
        if not self.ctx:
            raise OSError("seccomp_init failed")

    def add(self, action: int, name: str, *cmps: tuple[int, int, int, int]) -> bool:
        nr = self.lib.seccomp_syscall_resolve_name(name.encode())
        if nr == NR_SCMP_ERROR:
            return False  # not a call of this architecture (e.g. setuid32), as systemd skips it
        array = (ArgCmp * max(1, len(cmps)))(*(ArgCmp(*c) for c in cmps))
        rc = self.lib.seccomp_rule_add_array(self.ctx, ctypes.c_uint32(action), nr,
                                             len(cmps), array)
        if rc < 0:
            raise OSError(-rc, f"seccomp_rule_add {name}: {os.strerror(-rc)}")
        return True

    def load(self) -> None:
        rc = self.lib.seccomp_load(self.ctx)
        if rc < 0:
            raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def load_filters(units: list[Path]) -> None:
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]

    if setting(units, "MemoryDenyWriteExecute") == ["yes"]:
        f = Filter(lib, SCMP_ACT_ALLOW)
        eperm = scmp_act_errno(errno.EPERM)
        wx = mmap.PROT_WRITE | mmap.PROT_EXEC
        f.add(eperm, "mmap", (2, SCMP_CMP_MASKED_EQ, wx, wx))
        for name in ("mprotect", "pkey_mprotect"):
            f.add(eperm, name, (2, SCMP_CMP_MASKED_EQ, mmap.PROT_EXEC, mmap.PROT_EXEC))
        f.add(eperm, "shmat", (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
        f.load()

    families = setting(units, "RestrictAddressFamilies")
    if families:
        allowed = {int(getattr(socket, name)) for name in families}
        f = Filter(lib, SCMP_ACT_ALLOW)
        refuse = scmp_act_errno(errno.EAFNOSUPPORT)
        for family in range(AF_MAX + 1):
            if family not in allowed:
                f.add(refuse, "socket", (0, SCMP_CMP_EQ, family, 0))
        f.add(refuse, "socket", (0, SCMP_CMP_GT, AF_MAX, 0))
        f.load()

    # last, as systemd does: it may forbid seccomp() itself
    errno_setting = setting(units, "SystemCallErrorNumber")
    deny = scmp_act_errno(getattr(errno, errno_setting[0])) if errno_setting else 0  # KILL
    allow_list, calls = syscall_filter(units)
    if calls:
        if allow_list:
            f = Filter(lib, deny)
            for name in sorted(calls):
                f.add(SCMP_ACT_ALLOW, name)
        else:
            f = Filter(lib, SCMP_ACT_ALLOW)
            for name in sorted(calls):
                f.add(deny, name)
        f.load()


def main(argv: list[str]) -> int:
    split = argv.index("--")
    units = [Path(p) for p in argv[:split]]
    command = argv[split + 1:]
    load_filters(units)
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
