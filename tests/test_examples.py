"""The examples under examples/ are consistent with their READMEs and valid for the helper.

The daemon examples are run for real by tests/daemons/; here, without any daemon: every
placeholder of an example's files is filled by the `sed` line of its README (or
Dockerfile), every helper config in them loads, and the Kubernetes manifest parses as YAML
and wires the sidecar, the CSI driver socket and the shared volumes together.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from pathlib import Path

import pytest
import yaml

from helper import config
from helper.supervise.cmdargs import join_cmd_args

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
SED_SUBSTITUTION = re.compile(r"s\|@([A-Z][A-Z0-9_]*)@\|")
ACCOUNT_NAME = re.compile(r"[a-z_][a-z0-9_-]*")
RENDERED = ("nginx", "postgresql", "mariadb", "container")
HELPER_CONFIGS = {
    "nginx": ("helper.hcl",),
    "postgresql": ("helper.toml", "client-helper.hcl"),
    "mariadb": ("helper.toml",),
    "container": ("helper.hcl",),
}
SAMPLE = {"WORK": "/tmp/spiffe-example", "PORT": "8443",
          "AGENT": "/tmp/spiffe-example/agent.sock"}


def _files(name: str) -> list[Path]:
    return [p for p in (EXAMPLES / name).iterdir()
            if p.is_file() and p.name not in ("README.md", "Dockerfile")]


@pytest.mark.parametrize("name", RENDERED)
def test_the_readme_sed_line_fills_every_placeholder_of_the_example(name):
    used = set()
    for path in _files(name):
        used |= set(PLACEHOLDER.findall(path.read_text()))
    assert used, name
    instructions = (EXAMPLES / name / "README.md").read_text()
    if name == "container":
        instructions += (EXAMPLES / name / "Dockerfile").read_text()
    lines = re.findall(r"\bsed (?:-i )?-e [^\n]*", instructions)
    assert lines, f"{name}: no sed line"
    for line in lines:
        filled = set(SED_SUBSTITUTION.findall(line))
        assert used <= filled, f"{name}: {line!r} leaves {used - filled}"


def command_overrides(argv: list[str]) -> dict[str, str]:
    """What `spiffe-helper ... -- ARGV` overrides in the config (helper/cli.py)."""
    return {"cmd": argv[0], "cmd_args": join_cmd_args(argv[1:])}


def load_elsewhere(text: str, source: str, syntax: str, cert_dir: Path,
                   command: list[str] | None = None) -> config.Config:
    """Validate a config as the helper does, but with its cert_dir (which must exist) moved
    to an existing directory; the returned Config has the original cert_dir. `command`
    is what follows `--` on the helper's command line."""
    data = (config.parse_toml if syntax == "toml" else config.parse_hcl)(text, source=source)
    original = data["cert_dir"]
    data["cert_dir"] = str(cert_dir)
    # file_owner and file_group name accounts of the machine the example is meant for
    # (mariadb's "mysql"), which this one need not have: check their shape here, and let
    # the helper resolve them only where they exist.
    accounts = {}
    for key, resolve in (("file_owner", config.resolve_user), ("file_group", config.resolve_group)):
        name = data.get(key)
        if name is None:
            continue
        assert isinstance(name, str), (key, name)
        assert ACCOUNT_NAME.fullmatch(name), (key, name)
        try:
            resolve(name)
        except KeyError:
            accounts[key] = data.pop(key)
    cfg = config.from_mapping(data, source=source, mode_strings=syntax == "toml",
                              overrides=command_overrides(command) if command else None)
    return dataclasses.replace(cfg, cert_dir=original, **accounts)


@pytest.mark.parametrize(("name", "file"),
                         [(n, f) for n, files in HELPER_CONFIGS.items() for f in files])
def test_every_example_helper_config_is_valid(name, file, tmp_path):
    text = PLACEHOLDER.sub(lambda m: SAMPLE[m.group(1)], (EXAMPLES / name / file).read_text())
    syntax = "toml" if file.endswith(".toml") else "hcl"
    command = image_command()[1] if name == "container" else None
    cfg = load_elsewhere(text, f"examples/{name}/{file}", syntax, tmp_path, command)
    assert cfg.x509_enabled
    assert cfg.cert_dir.startswith(SAMPLE["WORK"] + "/")


def image_command() -> tuple[list[str], list[str]]:
    """The container image's ENTRYPOINT (the helper and its flags) and its CMD."""
    dockerfile = (EXAMPLES / "container" / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    return entrypoint, cmd


def test_container_image_wraps_its_cmd_after_double_dash():
    entrypoint, cmd = image_command()
    assert entrypoint[0] == "/opt/spiffe-helper/bin/spiffe-helper"
    assert entrypoint[-1] == "--"
    assert cmd[0] == "nginx"
    text = (EXAMPLES / "container" / "helper.hcl").read_text()
    data = config.parse_hcl(text, source="helper.hcl")
    assert "cmd" not in data
    assert "cmd_args" not in data


def test_examples_use_hcl_and_toml():
    suffixes = {Path(f).suffix for files in HELPER_CONFIGS.values() for f in files}
    assert {".hcl", ".toml"} <= suffixes


# --- Kubernetes ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest():
    docs = list(yaml.safe_load_all((EXAMPLES / "kubernetes" / "pod.yaml").read_text()))
    by_kind = {doc["kind"]: doc for doc in docs}
    assert set(by_kind) == {"ConfigMap", "Pod"}
    return by_kind


def _mounts(container) -> dict[str, dict]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def test_kubernetes_helper_is_a_native_sidecar_on_the_csi_socket(manifest, tmp_path):
    pod = manifest["Pod"]["spec"]
    (sidecar,) = [c for c in pod["initContainers"] if c["name"] == "spiffe-helper"]
    assert sidecar["restartPolicy"] == "Always"  # what makes an init container a sidecar
    volumes = {v["name"]: v for v in pod["volumes"]}
    csi = [name for name, v in volumes.items() if "csi" in v]
    assert len(csi) == 1
    assert volumes[csi[0]]["csi"] == {"driver": "csi.spiffe.io", "readOnly": True}
    socket_mount = _mounts(sidecar)[csi[0]]
    assert socket_mount["readOnly"] is True

    data = manifest["ConfigMap"]["data"]
    cfg = load_elsewhere(data["helper.conf"], "pod.yaml helper.conf", "hcl", tmp_path)
    assert cfg.daemon_mode
    assert posixpath.dirname(cfg.address.path) == socket_mount["mountPath"]
    config_mount = _mounts(sidecar)["config"]
    assert sidecar["command"][-1] == config_mount["mountPath"]
    assert config_mount["subPath"] == "helper.conf"
    # The startup probe is the helper's readiness endpoint: nginx starts after the write.
    probe = sidecar["startupProbe"]["httpGet"]
    assert cfg.health_checks.listener_enabled
    assert (probe["path"], probe["port"]) == (cfg.health_checks.readiness_path,
                                              cfg.health_checks.bind_port)


def test_kubernetes_certs_emptydir_is_shared_with_nginx_at_the_paths_it_reads(manifest,
                                                                             tmp_path):
    pod = manifest["Pod"]["spec"]
    (sidecar,) = pod["initContainers"]
    (app,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    data = manifest["ConfigMap"]["data"]
    cfg = load_elsewhere(data["helper.conf"], "pod.yaml helper.conf", "hcl", tmp_path)

    certs = [name for name, m in _mounts(sidecar).items() if m["mountPath"] == cfg.cert_dir]
    assert len(certs) == 1
    assert "emptyDir" in volumes[certs[0]]
    app_certs = _mounts(app)[certs[0]]
    assert app_certs["readOnly"] is True
    nginx_conf = data["nginx.conf"]
    for name in (cfg.svid_file_name, cfg.svid_key_file_name):
        assert f"{app_certs['mountPath']}/{name};" in nginx_conf

    # Signalling nginx in the other container: one process namespace, and nginx's pid file
    # on a volume both containers mount at the same path.
    assert pod["shareProcessNamespace"] is True
    assert cfg.renew_signal == "SIGHUP"
    pid_dir = posixpath.dirname(cfg.pid_file_name)
    shared = [n for n, m in _mounts(sidecar).items() if m["mountPath"] == pid_dir]
    assert len(shared) == 1
    assert _mounts(app)[shared[0]]["mountPath"] == pid_dir
    assert f"pid {cfg.pid_file_name};" in nginx_conf


def test_kubernetes_wrapped_pod_runs_nginx_after_double_dash(tmp_path):
    docs = list(yaml.safe_load_all((EXAMPLES / "kubernetes" / "wrapped.yaml").read_text()))
    by_kind = {doc["kind"]: doc for doc in docs}
    assert set(by_kind) == {"ConfigMap", "Pod"}
    pod = by_kind["Pod"]["spec"]
    (container,) = pod["containers"]
    assert "initContainers" not in pod
    entrypoint, image_cmd = image_command()
    assert container["command"][0] == entrypoint[0]
    assert container["command"][-1] == "--"
    assert container["args"] == image_cmd  # the image's nginx, spelled out
    cfg = load_elsewhere(by_kind["ConfigMap"]["data"]["helper.conf"], "wrapped.yaml", "hcl",
                         tmp_path, container["args"])
    assert cfg.cmd == "nginx"
    assert cfg.on_cmd_exit == "exit"
    mounts = _mounts(container)
    volumes = {v["name"]: v for v in pod["volumes"]}
    (csi,) = [name for name, v in volumes.items() if "csi" in v]
    assert posixpath.dirname(cfg.address.path) == mounts[csi]["mountPath"]
    assert mounts["certs"]["mountPath"] == cfg.cert_dir == "/srv/spiffe/certs"
    assert volumes["certs"]["emptyDir"] == {"medium": "Memory"}
    nginx_conf = (EXAMPLES / "container" / "nginx.conf").read_text().replace("@WORK@",
                                                                             "/srv/spiffe")
    assert f"ssl_certificate     {cfg.cert_dir}/{cfg.svid_file_name};" in nginx_conf
    config_mount = mounts["config"]
    assert container["command"][container["command"].index("-config") + 1] == \
        config_mount["mountPath"]
    probe = container["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == (cfg.health_checks.readiness_path,
                                              cfg.health_checks.bind_port)
