"""How helper/config is built: defaults declared once, I/O only in load.py, accounts
resolved once at load, and the reference renderer never on a helper run."""

from __future__ import annotations

import ast
import dataclasses
import grp
import inspect
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
from util import ROOT

from helper.config import (
    CONFIG_KEYS,
    Config,
    Key,
    config_warnings,
    keys,
    load,
    loads,
    render_resolved,
)

CONFIG_DIR = ROOT / "helper" / "config"
PURE_MODULES = ("model", "keys", "hcl", "checks", "rules", "reference")
X509 = ('svid_file_name = "s.pem"\nsvid_key_file_name = "k.pem"\n'
        'svid_bundle_file_name = "b.pem"\n')

# What doing I/O looks like in source: modules that reach the system, and the calls that
# read or change files, the user and group databases or the environment.
IO_MODULES = {"os", "pwd", "grp", "io", "shutil", "glob", "tempfile", "subprocess", "socket",
              "helper.safefile"}
IO_CALLS = {"open", "input", "print"}
IO_ATTRIBUTES = {"read_text", "read_bytes", "write_text", "write_bytes", "open", "exists",
                 "is_dir", "is_file", "stat", "lstat", "iterdir", "glob", "mkdir", "unlink",
                 "touch", "chmod", "chown", "getpwnam", "getgrnam", "getpwuid", "getgrgid",
                 "environ", "getenv", "listdir", "scandir", "access"}


def io_in(source: str) -> list[str]:
    """The I/O a module's source does or imports, one entry per place."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names
                      if a.name.split(".")[0] in IO_MODULES or a.name in IO_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module in IO_MODULES or node.module.split(".")[0] in IO_MODULES:
                found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in IO_CALLS:
                found.append(f"{node.func.id}() line {node.lineno}")
        elif isinstance(node, ast.Attribute) and node.attr in IO_ATTRIBUTES:
            found.append(f".{node.attr} line {node.lineno}")
    return found


@pytest.mark.parametrize("name", PURE_MODULES)
def test_pure_modules_do_no_io(name: str) -> None:
    """Only load.py reads files or the user and group databases."""
    assert io_in((CONFIG_DIR / f"{name}.py").read_text()) == []


def test_the_io_scan_sees_load_s_io() -> None:
    found = io_in((CONFIG_DIR / "load.py").read_text())
    assert "import pwd" in found
    assert "import grp" in found
    assert any(entry.startswith(".read_bytes") for entry in found)
    assert any(entry.startswith(".is_dir") for entry in found)


def test_a_key_s_default_is_declared_once_in_the_dataclass() -> None:
    """The registry cannot state a default: it takes the dataclass field's."""
    assert "default" not in inspect.signature(Key).parameters
    assert "default=" not in (CONFIG_DIR / "keys.py").read_text().replace(
        "field(default=REQUIRED, init=False)", "")
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    for key in CONFIG_KEYS:
        assert key.default is defaults[key.name], key.name
        if key.section is not None:
            child_defaults = {f.name: f.default for f in dataclasses.fields(key.section)}
            for child in key.children:
                expected = child_defaults[child.name]
                assert (child.required if expected is dataclasses.MISSING
                        else child.default is expected), f"{key.name}.{child.name}"
    assert keys.REQUIRED is keys.X509_SVID_KEYS[0].default


def test_accounts_are_resolved_once_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid)
    cfg = loads(X509 + f'file_owner = "nobody"\nfile_group = "{group.gr_name}"\n', environ={})

    def no_lookup(name: str) -> None:
        raise AssertionError(f"looked up {name} after load")

    monkeypatch.setattr(pwd, "getpwnam", no_lookup)
    monkeypatch.setattr(grp, "getgrnam", no_lookup)
    assert (cfg.file_owner_id, cfg.file_group_id) == (nobody.pw_uid, group.gr_gid)
    moved = dataclasses.replace(cfg, cmd="x")  # as a reload plan rebuilds it
    assert (moved.file_owner_id, moved.file_group_id) == (nobody.pw_uid, group.gr_gid)
    assert cfg.file_owner == "nobody"
    assert 'file_owner = "nobody"' in render_resolved(cfg)


def test_a_config_built_directly_resolves_no_account() -> None:
    """Without load nothing is looked up: no id, so the writer changes no owner."""
    cfg = Config(svid_file_name="s", svid_key_file_name="k", svid_bundle_file_name="b",
                 file_owner="0", file_group="0")
    assert (cfg.file_owner_id, cfg.file_group_id) == (None, None)
    assert Config().file_owner_id is None


def test_a_helper_run_does_not_import_the_reference_renderer(tmp_path: Path) -> None:
    """What a run does with its config (load, warnings) leaves helper.config.reference
    unloaded; check-config and the docs load it on first use."""
    conf = tmp_path / "helper.conf"
    conf.write_text(X509)
    code = (
        "import sys\n"
        "import helper.cli, helper.app\n"
        "from helper import config\n"
        f"cfg = config.load({str(conf)!r})\n"
        "config.config_warnings(cfg)\n"
        "print('before', 'helper.config.reference' in sys.modules)\n"
        "config.render_resolved(cfg)\n"
        "print('after', 'helper.config.reference' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, check=True, cwd=ROOT)
    assert done.stdout.split("\n")[:2] == ["before False", "after True"]


def test_the_facade_keeps_the_loaded_config_api(tmp_path: Path) -> None:
    path = tmp_path / "helper.conf"
    path.write_text(X509 + "daemon_mode = false\ncmd = \"x\"\n")
    cfg = load(path, environ={})
    assert config_warnings(cfg) == ["cmd is set but daemon_mode is false: cmd will be ignored"]
