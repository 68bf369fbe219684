"""Write problems that waiting cannot fix, and the check-config test for them (I/O-light).

* `cannot_heal(exc)`: a write error that will fail the same way on every retry until an
  operator acts (read-only file system, permission denied, disk full, the directory
  gone, a directory planted at a file's path). One-shot mode exits 1 at once on one
  instead of waiting out startup_timeout; daemon mode keeps retrying (the operator may
  fix it while the helper runs).
* `check_writable(cfg)`: `check-config` creates and removes a temporary file in every
  output directory, as the user it runs as, and reports each one that fails.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from helper.config import Config, output_file_names
from helper.errors import WriteError

PERMANENT_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC,
                              errno.EDQUOT, errno.ENOENT, errno.ENOTDIR, errno.EISDIR})
CHECK_PREFIX = ".spiffe-helper-check-"


def cannot_heal(exc: WriteError) -> bool:
    """True when retrying the write cannot succeed without an operator."""
    return exc.errno in PERMANENT_ERRNOS


def output_directories(cfg: Config) -> dict[Path, str]:
    """Every directory the helper writes into -> the first key that puts a file there."""
    directories: dict[Path, str] = {}
    cert_dir = cfg.output_path("x").parent if cfg.cert_dir else None
    for key, name in output_file_names(cfg):
        directory = cfg.output_path(name).parent
        directories.setdefault(directory, "cert_dir" if directory == cert_dir else key)
    if cfg.credential_folder:
        directories.setdefault(cfg.output_path(cfg.credential_folder), "credential_folder")
    return directories


def _user() -> str:
    uid = os.geteuid()
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def check_writable(cfg: Config) -> list[str]:
    """One line per output directory where this user cannot create and remove a file."""
    import tempfile

    from helper.outputs.writer import describe_os_error

    problems = []
    for directory, key in sorted(output_directories(cfg).items()):
        try:
            fd, name = tempfile.mkstemp(prefix=CHECK_PREFIX, dir=directory)
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            problems.append(f"{key}: {directory} is not writable by {_user()}: "
                            f"{describe_os_error(exc)}")
    return problems
