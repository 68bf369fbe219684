"""The supervisor's configuration keys: spellings, defaults, validation, warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from helper.config import Config, ConfigError, config_warnings, loads, render_resolved

X509 = 'svid_file_name = "s.pem"\nsvid_key_file_name = "k.pem"\nsvid_bundle_file_name = "b.pem"\n'
CMD = 'cmd = "/usr/sbin/nginx"\n'


def hcl(text: str) -> Config:
    return loads(X509 + text, environ={})


def toml(text: str) -> Config:
    return loads(X509 + text, syntax="toml", environ={})


def test_defaults_keep_the_go_behaviour():
    cfg = hcl("")
    assert (cfg.renew_action, cfg.on_cmd_exit, cfg.stop_signal, cfg.stop_timeout) == (
        "signal", "renew", "SIGTERM", 10.0)
    assert (cfg.cmd_stdin, cfg.cmd_env, cfg.reload_cmd) == (False, (), ())
    assert (cfg.reload_debounce, cfg.reload_timeout) == (0.5, 30.0)


@pytest.mark.parametrize("text", [
    'cmd_env { A = "1"\n B = "two words" }\n',
    'cmd_env = { A = "1", B = "two words" }\n',
    'cmd_env { A = "1" }\ncmd_env { B = "two words" }\n',  # repeated blocks merge
])
def test_cmd_env_hcl_spellings(text):
    assert hcl(CMD + text).cmd_env == (("A", "1"), ("B", "two words"))


@pytest.mark.parametrize("text", [
    '[cmd_env]\nA = "1"\nB = "two words"\n',
    'cmd_env = { A = "1", B = "two words" }\n',
])
def test_cmd_env_toml_spellings(text):
    assert toml(CMD + text).cmd_env == (("A", "1"), ("B", "two words"))


@pytest.mark.parametrize(("text", "argv"), [
    ('reload_cmd = "mariadb-admin flush-ssl"\n', ("mariadb-admin", "flush-ssl")),
    ('reload_cmd = "psql -c \\"SELECT pg_reload_conf()\\""\n',
     ("psql", "-c", "SELECT pg_reload_conf()")),
    ('reload_cmd = ["psql", "-c", "SELECT pg_reload_conf()"]\n',
     ("psql", "-c", "SELECT pg_reload_conf()")),
    ('reload_cmd = ""\n', ()),
])
def test_reload_cmd_is_a_string_split_like_cmd_args_or_a_list(text, argv):
    assert hcl(text).reload_cmd == argv


def test_reload_cmd_toml_list():
    assert toml('reload_cmd = ["mariadb-admin", "flush-ssl"]\n').reload_cmd == (
        "mariadb-admin", "flush-ssl")


def test_the_other_keys():
    cfg = hcl(CMD + 'renew_action = "restart"\non_cmd_exit = "exit"\nstop_signal = "QUIT"\n'
              "stop_timeout = 2.5\ncmd_stdin = true\nreload_debounce = 0\nreload_timeout = 5\n")
    assert (cfg.renew_action, cfg.on_cmd_exit, cfg.stop_signal, cfg.stop_timeout) == (
        "restart", "exit", "SIGQUIT", 2.5)
    assert (cfg.cmd_stdin, cfg.reload_debounce, cfg.reload_timeout) == (True, 0.0, 5.0)
    assert hcl('stop_signal = ""\n').stop_signal == "SIGTERM"  # empty means the default


ERRORS = [
    ('renew_action = "restart"\n', "renew_action", '"restart" needs cmd'),
    (CMD + 'renew_action = "Restart"\n', "renew_action", "in lower case"),
    (CMD + 'renew_action = "reload"\n', "renew_action", "expected one of signal, restart"),
    ('on_cmd_exit = "exit"\n', "on_cmd_exit", '"exit" needs cmd'),
    (CMD + "on_cmd_exit = true\n", "on_cmd_exit", "expected a string"),
    (CMD + 'stop_signal = "SIGSTOP"\n', "stop_signal", "would not stop it"),
    (CMD + 'stop_signal = "SIGNOPE"\n', "stop_signal", "unknown signal"),
    (CMD + "stop_timeout = 0\n", "stop_timeout", "more than 0"),
    (CMD + "reload_debounce = -1\n", "reload_debounce", "at least 0"),
    (CMD + 'reload_debounce = "1"\n', "reload_debounce", "number of seconds"),
    (CMD + "reload_timeout = 0\n", "reload_timeout", "more than 0"),
    (CMD + 'cmd_env = "A=1"\n', "cmd_env", 'expected a block of NAME = "value" pairs'),
    (CMD + 'cmd_env { A = 1 }\n', "cmd_env.A", "expected a string"),
    (CMD + 'cmd_env { "A-B" = "1" }\n', "cmd_env.A-B", "not an environment variable name"),
    (CMD + 'cmd_env { "2A" = "1" }\n', "cmd_env.2A", "not an environment variable name"),
    ('reload_cmd = 5\n', "reload_cmd", "expected a string or a list of strings"),
    ('reload_cmd = ["", "x"]\n', "reload_cmd", "must not be empty"),
    ('reload_cmd = [1]\n', "reload_cmd[0]", "expected a string"),
    ('reload_cmd = "a\\"b"\n', "reload_cmd", "bare \""),
    ('reload_cmd = "x"\ndaemon_mode = false\n', "reload_cmd", "only supported in daemon mode"),
]


@pytest.mark.parametrize(("text", "key", "message"), ERRORS)
def test_validation_errors_name_the_key(text, key, message):
    with pytest.raises(ConfigError) as info:
        loads(X509 + text, source="helper.conf", environ={})
    assert info.value.key == key
    assert message in info.value.problem
    assert "\n" not in str(info.value)


def test_the_daemon_mode_flag_applies_before_the_reload_cmd_check():
    with pytest.raises(ConfigError, match="reload_cmd"):
        loads(X509 + 'reload_cmd = "x"\n', environ={}, daemon_mode=False)
    assert loads(X509 + 'reload_cmd = "x"\ndaemon_mode = false\n', environ={},
                 daemon_mode=True).reload_cmd == ("x",)


@pytest.mark.parametrize(("text", "warning"), [
    ("cmd_stdin = true\n", "cmd_stdin is set but cmd is not"),
    ('cmd_env { A = "1" }\n', "cmd_env is set but neither cmd nor reload_cmd is"),
    (CMD + 'renew_action = "restart"\nrenew_signal = "SIGHUP"\n',
     'renew_signal is not sent to cmd when renew_action is "restart"'),
])
def test_warnings(text, warning):
    assert any(warning in w for w in config_warnings(hcl(text)))


def test_no_warning_for_cmd_env_used_by_reload_cmd():
    assert config_warnings(hcl('reload_cmd = "x"\ncmd_env { A = "1" }\n')) == []


@pytest.mark.parametrize("text", [
    "",
    CMD + 'renew_action = "restart"\non_cmd_exit = "restart"\nstop_signal = "SIGQUIT"\n'
    'stop_timeout = 0.25\ncmd_stdin = true\nreload_debounce = 0\nreload_timeout = 1.5\n'
    'cmd_env {\n A = "x y"\n B = "${NOT_INTERPOLATED}"\n C = "back\\\\slash"\n D = ""\n}\n'
    'reload_cmd = ["psql", "-c", "SELECT 1", ""]\n',
])
def test_render_round_trip(text):
    cfg = hcl(text)
    assert loads(render_resolved(cfg), environ={}) == cfg


def test_reference_example_for_cmd_env_is_a_valid_block(tmp_path: Path):
    cfg = hcl(CMD + 'cmd_env = { LOG_LEVEL = "debug" }\n')
    assert cfg.cmd_env == (("LOG_LEVEL", "debug"),)
