"""Starting and signalling child processes (the I/O edge of the supervisor).

Children are started with ``posix_spawnp`` (no ``fork`` of a threaded process, no
``preexec_fn``):

* an empty signal mask and the default disposition for every catchable signal, whatever
  the helper blocks or ignores (Python itself ignores SIGPIPE and SIGXFSZ, and a mask or an
  ignored signal is inherited across exec);
* their own process group (``setpgroup=0``): Ctrl-C on a terminal reaches the helper's
  group only, the helper forwards it once, and the whole group can be SIGKILLed;
* stdin from ``/dev/null`` unless asked to inherit it; stdout and stderr inherited (stderr
  may be redirected to a pipe, for ``reload_cmd``);
* ``cmd`` is looked up in ``PATH`` when it has no slash, as Go's ``exec.Command`` does.

``cmd`` itself (``death_signal`` given, Linux) is started through a tiny exec trampoline:
the spawned process is ``python -I -S -c TRAMPOLINE``, which sets its parent-death signal
(``prctl(PR_SET_PDEATHSIG)``), checks that the helper is still its parent (else it
signals itself at once), restores the signal dispositions Python changed, and execs the
command with the exact argv and environment bytes it was given (read back from
``/proc/self``): same pid, same process group. If the helper is SIGKILLed, the kernel
sends ``cmd`` its stop signal, so it never runs on unsupervised. Why a trampoline: the
signal must be set in the child between fork and exec, and ``preexec_fn`` is not safe in
a threaded process; the parent-death signal belongs to the *thread* that spawned, so the
child is spawned from the main thread only (elsewhere it is started without one).

Nothing here waits for a child: ``helper/supervise/reaper.py`` owns ``waitpid``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import stat
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Removed from every child's environment: a child that inherits it can confuse systemd.
DROPPED_ENV = ("NOTIFY_SOCKET",)

CATCHABLE_SIGNALS = frozenset(
    s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)
)


@dataclass(eq=False)
class Process:
    """A child the helper started. `exit` resolves to its raw wait status."""

    pid: int
    argv: tuple[str, ...]
    started: float  # monotonic seconds
    exit: asyncio.Future[int]
    expected_exit: bool = False  # set before the helper stops it on purpose
    ended: float | None = field(default=None)

    @property
    def alive(self) -> bool:
        """True until it has been reaped (a zombie still counts as alive: its pid is ours)."""
        return not self.exit.done()

    @property
    def pgid(self) -> int:
        return self.pid  # each child leads its own process group


def child_environment(base: Mapping[str, str], *extra: Mapping[str, str]) -> dict[str, str]:
    """`base` without NOTIFY_SOCKET, then each of `extra` laid over it in turn."""
    env = {k: v for k, v in base.items() if k not in DROPPED_ENV}
    for layer in extra:
        env.update(layer)
    return env


# Runs in the child, between spawn and exec (see the module docstring). argv after "--":
# the helper's pid, the signal, the program's path, then the program's argv (sys.orig_argv
# round-trips to the exact bytes). The environment is read back from /proc/self as the
# exact bytes the kernel got (Python may change os.environ at start: C locale coercion).
TRAMPOLINE = """\
import os, signal, sys
args = [os.fsencode(a) for a in sys.orig_argv]
try:
    with open("/proc/self/environ", "rb") as f:
        env = dict(e.split(b"=", 1) for e in f.read().split(b"\\0") if b"=" in e)
except OSError:
    env = dict(os.environb)
at = args.index(b"--") + 1
parent, sig, path, argv = int(args[at]), int(args[at + 1]), args[at + 2], args[at + 3:]
for s in (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ, sig):
    try:
        signal.signal(s, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != parent:
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)
try:
    os.execve(path, argv, env)
except OSError as e:
    os.write(2, b"spiffe-helper: cannot execute " + path + b": "
             + (e.strerror or str(e)).encode() + b"\\n")
    os._exit(127)
"""


def resolve(name: str) -> str:
    """The file `name` runs, found as posix_spawnp would (PATH of the helper when it has no
    slash); FileNotFoundError or PermissionError when there is none to run."""
    if "/" in name:
        candidates = [name]
    else:
        search = os.environ.get("PATH") or "/bin:/usr/bin"
        candidates = [os.path.join(d or ".", name) for d in search.split(os.pathsep)]
    denied = False
    for path in candidates:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(path, os.X_OK):
            return path
        denied = True
    if denied:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


def can_set_death_signal() -> bool:
    """Linux, an interpreter to run the trampoline, and the main thread (the parent-death
    signal fires when the thread that spawned the child ends)."""
    return (sys.platform.startswith("linux") and bool(sys.executable)
            and not getattr(sys, "frozen", False)  # a frozen binary takes no -c
            and threading.current_thread() is threading.main_thread())


def spawn(argv: Sequence[str], env: Mapping[str, str], *, inherit_stdin: bool = False,
          stderr_fd: int | None = None, death_signal: int | None = None) -> int:
    """Start `argv` as described in the module docstring; its pid. With `death_signal`,
    the child gets that signal if the helper dies (where `can_set_death_signal`).

    Raises OSError (FileNotFoundError, PermissionError, ...) when it cannot be executed.
    """
    if not argv or not argv[0]:
        raise ValueError("empty command")
    actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = []
    if not inherit_stdin:
        actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
    if stderr_fd is not None and stderr_fd != 2:
        actions.append((os.POSIX_SPAWN_DUP2, stderr_fd, 2))
    program, args = argv[0], list(argv)
    if death_signal is not None and can_set_death_signal():
        path = resolve(argv[0])
        program = sys.executable
        args = [sys.executable, "-I", "-S", "-c", TRAMPOLINE, "--", str(os.getpid()),
                str(int(death_signal)), path, *argv]
    return os.posix_spawnp(
        program, args, dict(env),
        file_actions=actions,
        setpgroup=0,
        setsigmask=(),
        setsigdef=CATCHABLE_SIGNALS,
    )


def exit_code(wait_status: int) -> int:
    """Shell convention: exit N gives N, killed by signal S gives 128 + S."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def describe_exit(wait_status: int) -> str:
    """'exited 3' or 'killed by SIGTERM'."""
    if os.WIFSIGNALED(wait_status):
        return f"killed by {signal_name(os.WTERMSIG(wait_status))}"
    return f"exited {os.waitstatus_to_exitcode(wait_status)}"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def send_signal(pid: int, sig: int) -> bool:
    """Signal one process; False when it no longer exists."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def signal_group(pgid: int, sig: int) -> bool:
    """Signal a whole process group; False when the group is empty."""
    if pgid <= 1:  # killpg(0 or 1) would reach far more than one child's group
        raise ValueError(f"refusing to signal process group {pgid}")
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def group_exists(pgid: int) -> bool:
    return signal_group(pgid, 0)


def parse_pid(text: str) -> int:
    """The pid on the first line of a pid file (white space around it allowed; further
    lines, as in PostgreSQL's postmaster.pid, are ignored); ValueError if there is none.

    0 and negative numbers are refused: kill(0) and kill(-1) would signal whole groups.
    """
    stripped = text.strip().split("\n", 1)[0].strip()
    if not (stripped.isascii() and stripped.isdigit()):  # what it holds is never shown
        raise ValueError("no pid in it" if stripped else "it is empty")
    pid = int(stripped)
    if pid <= 0:
        raise ValueError(f"pid {pid} is not a process")
    return pid
