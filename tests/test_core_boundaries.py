"""The core's boundaries (issue 15): only the CLI imports helper.app, nothing imports it
under TYPE_CHECKING (no import cycle), and the phase order the rules need is in code."""

from __future__ import annotations

import ast
import asyncio
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from util import ROOT

from helper import app, config
from helper.config.watch import ConfigWatcher
from helper.features import Feature
from helper.identity.snapshot import X509Snapshot
from helper.ops.expiry import ExpiryWatch
from helper.ops.health import HealthServer
from helper.ops.sdnotify import SystemdNotify
from helper.supervise.supervisor import Supervisor

CORE = "helper.app"


def imported_modules(node: ast.AST, module: str) -> set[str]:
    """The absolute module names `node` imports (`from helper import app` -> helper.app)."""
    package = module.rsplit(".", 1)[0]
    names: set[str] = set()
    for item in ast.walk(node):
        if isinstance(item, ast.Import):
            names |= {alias.name for alias in item.names}
        elif isinstance(item, ast.ImportFrom):
            base = item.module or ""
            if item.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - item.level + 1] + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in item.names}
    return names


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted((ROOT / "helper").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def test_no_module_but_the_cli_imports_the_core():
    importers = sorted(name for name, tree in modules().items()
                       if name != CORE and CORE in imported_modules(tree, name))
    assert importers == ["helper.cli"]


def test_nothing_imports_the_core_under_type_checking():
    found = sorted(name for name, tree in modules().items() for node in ast.walk(tree)
                   if is_type_checking_block(node) and CORE in imported_modules(node, name))
    assert found == []


def test_the_parse_sees_the_imports_it_pins():
    tree = ast.parse("from helper import app\nif TYPE_CHECKING:\n    from ..app import Core\n")
    assert CORE in imported_modules(tree, "helper.cli")
    assert CORE in imported_modules(tree.body[1], "helper.ops.health")
    assert is_type_checking_block(tree.body[1])


def daemon_config(tmp_path: Path, extra: str = "") -> config.Config:
    path = tmp_path / "helper.conf"
    path.write_text(f'agent_address = "{tmp_path / "no-agent.sock"}"\ncert_dir = "{tmp_path}"\n'
                    'svid_file_name = "s.pem"\nsvid_key_file_name = "k.pem"\n'
                    'svid_bundle_file_name = "b.pem"\n' + extra)
    return config.load(str(path))


def test_the_daemon_features_come_in_the_order_the_rules_need(tmp_path):
    """sd_notify last: READY=1 after the supervisor started cmd, STOPPING=1 first (shutdown
    runs in reverse)."""
    cfg = daemon_config(tmp_path, 'cmd = "/bin/true"\n')
    environ = {"NOTIFY_SOCKET": "@spiffe-helper-order-test"}
    features = app.build(cfg, environ=environ).features
    assert [type(f) for f in features] == [HealthServer, ExpiryWatch, ConfigWatcher, Supervisor,
                                           SystemdNotify]
    assert app.build(daemon_config(tmp_path, "daemon_mode = false\n")).features == ()
    features[-1].notifier.close()


class Recorder(Feature):
    signals = frozenset({signal.SIGHUP})

    def __init__(self) -> None:
        self.phases: list[str] = []
        self.serving = asyncio.Event()
        self.signalled = asyncio.Event()

    async def serve(self) -> int | None:
        self.serving.set()
        return None

    async def written(self, pipeline: str, snapshot: X509Snapshot,
                      changed: Sequence[Path]) -> None:
        self.phases.append("written")

    async def reloading(self) -> None:
        self.phases.append("reloading")

    async def reconfigure(self, old: config.Config, new: config.Config) -> None:
        self.phases.append(f"reconfigure {old.clock_skew:g}->{new.clock_skew:g}")

    async def reloaded(self) -> None:
        self.phases.append("reloaded")

    async def signal(self, sig: signal.Signals) -> int | None:
        self.phases.append(sig.name)
        self.signalled.set()
        return None

    async def shutdown(self, code: int) -> int:
        self.phases.append(f"shutdown {code}")
        return code


def test_sighup_reloads_the_config_before_any_feature_sees_the_signal(tmp_path):
    """The files are rewritten for the new config before the supervisor forwards SIGHUP."""
    cfg = daemon_config(tmp_path)
    edited = daemon_config(tmp_path, "clock_skew = 7\n")
    recorder = Recorder()
    core = app.Core(cfg, load_config=lambda: edited, features=(recorder,))

    async def scenario() -> int:
        running = asyncio.create_task(core.run())
        try:
            await asyncio.wait_for(recorder.serving.wait(), 10)  # signals are captured
            os.kill(os.getpid(), signal.SIGHUP)
            await asyncio.wait_for(recorder.signalled.wait(), 10)
        finally:
            core.stop.set()
        return await asyncio.wait_for(running, 10)

    assert asyncio.run(scenario()) == 0
    assert recorder.phases == ["reloading", f"reconfigure {cfg.clock_skew:g}->7", "reloaded",
                               "SIGHUP", "shutdown 0"]
