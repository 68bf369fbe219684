"""The command line as operators type it (issue 16, items 3 and 6), through the real CLI.

* `spiffe-helper [flags] -- CMD ARGS...` supervises CMD with exactly those arguments,
  overriding cmd/cmd_args of the file (a real child, the real dev-agent);
* Go `flag` habits: an unknown flag is an error naming it, no bundling or abbreviations,
  one or two dashes, `-flag=value`; unknown subcommands list the valid ones; every
  subcommand's -help says what applies to it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from util import ROOT, HelperProcess, run_helper, wait_for, write_conf

from helper.supervise.cmdargs import join_cmd_args, split_cmd_args

RECORDER = ROOT / "tests" / "children" / "recorder.py"
SUBCOMMANDS = ("run", "check-config", "status", "demo", "dev-agent", "help")


def events(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines()]
    except FileNotFoundError:
        return []


# The base config (tests/util.py) plus this: the child hears of a rotation by SIGUSR1.
USR1 = 'renew_signal = "SIGUSR1"\n'


ODD_ARGS = ["two words", 'say "hi"', "", "-config", "--", "tab\there"]


@pytest.mark.parametrize("argv", [[], ["a"], ODD_ARGS, ["x y", "", ""], ['"', '""'],
                                  ["line\nbreak"]])
def test_join_cmd_args_round_trips_through_go_splitting(argv):
    assert split_cmd_args(join_cmd_args(argv)) == argv


def test_double_dash_command_is_supervised_with_exact_arguments_overriding_the_file(
        tmp_path, agent, certs):
    record = tmp_path / "record.jsonl"
    # The file names another command: the one after -- wins.
    conf = write_conf(tmp_path, agent, certs, USR1 + 'cmd = "/bin/false"\ncmd_args = "x"\n')
    child = [sys.executable, str(RECORDER), "--record", str(record),
             "--cert", str(certs / "svid.pem"), *(f"--env={v}" for v in ODD_ARGS if v != "--")]
    with HelperProcess("-config", str(conf), "--", *child, log=tmp_path / "helper.log") as helper:
        start = wait_for(lambda: [e for e in events(record) if e["event"] == "start"],
                         timeout=30, what="child start")[0]
        assert start["argv"] == child[2:]
        assert start["cert_exists"] is True  # started after the first write
        wait_for(lambda: any(e["event"] == "ready" for e in events(record)), what="ready")
        agent.rotate()
        wait_for(lambda: any(e.get("name") == "SIGUSR1" for e in events(record)),
                 timeout=30, what="renew signal to the child")
        helper.stop()
    starts = [e for e in events(record) if e["event"] == "start"]
    assert len(starts) == 1, helper.output()


def test_check_config_shows_the_command_after_double_dash(tmp_path, agent, certs):
    conf = write_conf(tmp_path, agent, certs, USR1)
    result = run_helper("check-config", "-config", str(conf), "--", "nginx", "-g",
                        "daemon off;")
    assert result.returncode == 0, result.stderr
    assert 'cmd = "nginx"' in result.stdout
    assert 'cmd_args = "-g \\"daemon off;\\""' in result.stdout


def test_double_dash_without_a_command_is_an_error(tmp_path, agent, certs):
    conf = write_conf(tmp_path, agent, certs, USR1)
    result = run_helper("-config", str(conf), "--")
    assert result.returncode == 2
    assert "-- must be followed by the command" in result.stderr


def test_a_command_without_double_dash_says_where_it_goes(tmp_path, agent, certs):
    conf = write_conf(tmp_path, agent, certs, USR1)
    result = run_helper("-config", str(conf), "nginx")
    assert result.returncode == 2
    assert "unexpected argument 'nginx'" in result.stderr
    assert "after --" in result.stderr


@pytest.mark.parametrize("flag", ["-conf", "--conf", "-con", "-cx", "-daemon"])
def test_an_unknown_flag_is_an_error_naming_it(tmp_path, flag):
    # -conf must not become -c onf (bundling), -con must not abbreviate -config
    result = run_helper(flag, "helper.conf", cwd=tmp_path)
    assert result.returncode == 2
    name = flag.lstrip("-")
    assert f"flag provided but not defined: -{name}" in result.stderr
    assert "unrecognized arguments" not in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_flag_suggests_the_close_one(tmp_path):
    result = run_helper("-conf", "x", cwd=tmp_path)
    assert "did you mean -config?" in result.stderr


@pytest.mark.parametrize("subcommand", ["check-config", "status", "demo", "dev-agent"])
def test_unknown_flags_of_subcommands_are_named_too(subcommand, tmp_path):
    result = run_helper(subcommand, "-conf", "x", cwd=tmp_path)
    assert result.returncode == 2
    assert "flag provided but not defined: -conf" in result.stderr


@pytest.mark.parametrize("spelling", [["-config", "{}"], ["--config", "{}"], ["-config={}"],
                                      ["--config={}"], ["-c", "{}"]])
def test_go_spellings_of_a_flag_with_a_value(spelling, tmp_path, agent, certs):
    conf = write_conf(tmp_path, agent, certs, USR1)
    args = [a.format(conf) for a in spelling]
    result = run_helper("check-config", *args, "-daemon-mode=false")
    assert result.returncode == 0, result.stderr
    assert "daemon_mode = false" in result.stdout


def test_a_value_that_looks_like_a_flag_is_taken_as_the_value(tmp_path, agent, certs):
    conf = write_conf(tmp_path, agent, certs, USR1)
    odd = tmp_path / "-odd.conf"
    odd.write_text(conf.read_text())
    result = run_helper("check-config", "-config", "-odd.conf", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_unknown_subcommand_lists_the_valid_ones(tmp_path):
    result = run_helper("chek-config", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown subcommand 'chek-config'" in result.stderr
    assert "did you mean check-config?" in result.stderr
    for name in SUBCOMMANDS:
        assert name in result.stderr


def test_usage_line_lists_the_subcommands():
    result = run_helper("-help")
    assert result.returncode == 0
    usage = result.stdout.splitlines()[0]
    assert usage.startswith("usage: spiffe-helper ")
    for name in SUBCOMMANDS:
        assert name in usage
    assert "-- CMD" in usage


def test_run_help_shows_run_usage():
    result = run_helper("run", "-help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: spiffe-helper run ")
    for flag in ("-config", "-daemon-mode", "-log-level", "-log-format", "-version",
                 "-- CMD"):
        assert flag in result.stdout


def test_check_config_help_shows_only_what_applies():
    out = run_helper("check-config", "-help").stdout
    assert out.startswith("usage: spiffe-helper check-config ")
    assert "-config" in out
    for absent in ("-version", "-log-level", "-log-format", "keep running"):
        assert absent not in out


def test_check_config_still_takes_the_run_flags_it_hides(tmp_path, agent, certs):
    conf = write_conf(tmp_path, agent, certs, USR1)
    result = run_helper("check-config", "-config", str(conf), "-log-level", "debug")
    assert result.returncode == 0, result.stderr
    assert 'log_level = "debug"' in result.stdout


def test_status_help_lists_every_exit_code():
    out = run_helper("status", "-help").stdout
    for code in ("0", "1", "2", "3"):
        assert any(line.strip().startswith(code + " ") for line in out.splitlines()), code


def test_dev_agent_help_mentions_the_rotation_signals():
    out = run_helper("dev-agent", "-help").stdout
    assert "SIGUSR1" in out
    assert "SIGUSR2" in out


@pytest.mark.parametrize("args", [["-help"], ["run", "-help"], ["check-config", "-help"],
                                  ["status", "-help"], ["demo", "-help"],
                                  ["dev-agent", "-help"], ["help", "status"]])
@pytest.mark.parametrize("columns", ["40", "80"])
def test_no_line_break_inside_the_program_name(args, columns):
    env = dict(os.environ, COLUMNS=columns)
    result = run_helper(*args, env=env)
    assert result.returncode == 0, result.stderr
    assert "spiffe-\n" not in result.stdout
    for line in result.stdout.splitlines():
        assert not line.rstrip().endswith("spiffe-")


def test_help_subcommand_shows_that_subcommand():
    result = run_helper("help", "dev-agent")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: spiffe-helper dev-agent")


def test_no_config_and_no_helper_conf_says_so_and_shows_the_flag(tmp_path):
    for args in ([], ["check-config"], ["status"]):
        result = run_helper(*args, cwd=tmp_path)
        assert result.returncode == 2, args
        assert "no -config given and no helper.conf" in result.stderr
        assert "-config FILE" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
