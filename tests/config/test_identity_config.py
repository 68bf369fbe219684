"""Configuration of the identity outputs (helper/config/) and AtomicWriter.remove."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

import pytest

from helper.config import (
    Config,
    ConfigError,
    X509SVIDConfig,
    config_warnings,
    loads,
    read_password_file,
    render_resolved,
)
from helper.outputs.pem import OutputFile
from helper.outputs.writer import AtomicWriter, WriteError

X509 = ('svid_file_name = "s.pem"\nsvid_key_file_name = "k.pem"\n'
        'svid_bundle_file_name = "b.pem"\n')


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def error(text: str, syntax: str = "hcl") -> ConfigError:
    with pytest.raises(ConfigError) as failure:
        loads(text, syntax=syntax, environ={})  # type: ignore[arg-type]
    return failure.value


def test_each_new_output_is_enough_on_its_own(in_tmp: Path) -> None:
    (in_tmp / "spiffe").mkdir()
    for line in ('svid_combined_file_name = "c.pem"', 'pkcs12_file_name = "k.p12"',
                 'credential_folder = "spiffe"', 'spiffe_bundle_map_file_name = "m.json"',
                 'x509_svids = [{hint = "h", svid_file_name = "a", svid_key_file_name = "b", '
                 'svid_bundle_file_name = "c"}]'):
        cfg = loads(line + "\n", environ={})
        assert cfg.needs_x509
        assert not cfg.needs_jwt
    assert loads('jwt_bundle_file_name = "j.json"\n', environ={}).needs_jwt
    assert "no output configured" in str(error('file_owner = "root"\n'))


def test_owner_and_group_by_name_or_id(in_tmp: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid)
    cfg = loads(X509 + f'file_owner = "nobody"\nfile_group = "{group.gr_name}"\n', environ={})
    assert (cfg.file_owner_id, cfg.file_group_id) == (nobody.pw_uid, group.gr_gid)
    cfg = loads(X509 + "file_owner = 4242\nfile_group = \"4343\"\n", environ={})
    assert (cfg.file_owner_id, cfg.file_group_id) == (4242, 4343)
    assert loads(render_resolved(cfg), environ={}) == cfg
    assert Config().file_owner_id is None


@pytest.mark.parametrize(("line", "key", "problem"), [
    ('file_owner = "no-such-user-here"', "file_owner", "unknown user"),
    ('file_group = "no-such-group-here"', "file_group", "unknown group"),
    ("file_owner = -1", "file_owner", "must not be negative"),
    ("file_group = true", "file_group", "expected a string"),
])
def test_bad_owner_or_group_names_the_key(in_tmp: Path, line: str, key: str,
                                          problem: str) -> None:
    failure = error(X509 + line + "\n")
    assert failure.key == key
    assert problem in failure.problem


def test_x509_svids_entries_need_exactly_one_selector(in_tmp: Path) -> None:
    files = 'svid_file_name = "a", svid_key_file_name = "b", svid_bundle_file_name = "c"'
    both = error(f'x509_svids = [{{hint = "h", spiffe_id = "spiffe://a.org/x", {files}}}]\n')
    assert both.key == "x509_svids[0]"
    neither = error(f"x509_svids = [{{{files}}}]\n")
    assert "exactly one of hint and spiffe_id" in neither.problem
    bad_id = error(f'x509_svids = [{{spiffe_id = "spiffe://A.org/x", {files}}}]\n')
    assert bad_id.key == "x509_svids[0].spiffe_id"
    missing = error('x509_svids = [{hint = "h", svid_file_name = "a"}]\n')
    assert missing.key == "x509_svids[0].svid_key_file_name"
    same = 'svid_file_name = "s.pem", svid_key_file_name = "b", svid_bundle_file_name = "c"'
    clash = error(X509 + f'x509_svids = [{{hint = "h", {same}}}]\n')
    assert "names the same file" in clash.problem
    cfg = loads(f'x509_svids = [{{spiffe_id = "spiffe://a.org/x", {files}}}]\n', environ={})
    assert cfg.x509_svids == (X509SVIDConfig("a", "b", "c", spiffe_id="spiffe://a.org/x"),)


def test_pkcs12_password_file_is_read_at_load_and_never_shown(in_tmp: Path) -> None:
    (in_tmp / "pw").write_bytes(b"hunter2\r\n")
    cfg = loads('pkcs12_file_name = "k.p12"\npkcs12_password_file = "pw"\n', environ={})
    assert read_password_file(cfg) == b"hunter2"
    assert "hunter2" not in render_resolved(cfg)
    assert config_warnings(cfg) == []
    (in_tmp / "empty").write_bytes(b"\n")
    for name, problem in (("missing", "cannot read"), ("empty", "is empty")):
        failure = error(f'pkcs12_file_name = "k.p12"\npkcs12_password_file = "{name}"\n')
        assert failure.key == "pkcs12_password_file"
        assert problem in failure.problem
    alone = error(X509 + 'pkcs12_password_file = "pw"\n')
    assert "pkcs12_file_name is not" in alone.problem


def test_pkcs12_without_password_warns_about_java(in_tmp: Path) -> None:
    cfg = loads('pkcs12_file_name = "k.p12"\n', environ={})
    assert any("Java" in w for w in config_warnings(cfg))


def test_credential_folder_must_be_an_existing_directory(in_tmp: Path) -> None:
    failure = error('credential_folder = "nope"\n')
    assert failure.key == "credential_folder"
    (in_tmp / "file").write_text("")
    assert error('credential_folder = "file"\n').key == "credential_folder"


def test_toml_array_of_tables_for_x509_svids(in_tmp: Path) -> None:
    cfg = loads('[[x509_svids]]\nhint = "h"\nsvid_file_name = "a"\nsvid_key_file_name = "b"\n'
                'svid_bundle_file_name = "c"\n', syntax="toml", environ={})
    assert cfg.x509_svids == (X509SVIDConfig("a", "b", "c", hint="h"),)


# --- AtomicWriter.remove --------------------------------------------------------------------------


def test_remove_deletes_files_and_never_follows_a_symlink(tmp_path: Path) -> None:
    writer = AtomicWriter()
    token = tmp_path / "jwt.token"
    writer.write_set([OutputFile(token, b"t", 0o600, secret=True)])
    target = tmp_path / "precious"
    target.write_text("keep me")
    link = tmp_path / "link.token"
    os.symlink(target, link)
    assert writer.remove([token, link, tmp_path / "absent"]) == [token, link]
    assert not token.exists()
    assert not link.is_symlink()
    assert target.read_text() == "keep me"
    # after a removal the same content is written again (no stale skip)
    assert writer.write_set([OutputFile(token, b"t", 0o600, secret=True)]) == [token]


def test_remove_refuses_a_directory(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(WriteError, match="directory"):
        AtomicWriter().remove([tmp_path / "dir"])


def test_jwt_refresh_schedule_is_go_s_rule_with_bounds() -> None:
    from datetime import datetime, timedelta, timezone

    from helper.outputs.jwt_pipeline import jwt_retry_backoff, refresh_delay

    now = datetime.now(timezone.utc)
    assert refresh_delay(now + timedelta(seconds=300), now) == 151.0  # Go: 300/2 + 1
    assert refresh_delay(now + timedelta(seconds=4), now) == 3.0
    assert refresh_delay(now + timedelta(seconds=2), now) == 1.5  # never past 3/4
    assert refresh_delay(now - timedelta(seconds=1), now) == 0.0
    assert refresh_delay(datetime.max.replace(tzinfo=timezone.utc), now) == 24 * 3600.0
    backoff = jwt_retry_backoff()
    assert [backoff.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
