"""The CLI as a user meets it: help with examples, JSON for scripts, one-line errors, light start."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from launcher.cli import _register_optional_groups, cli

_register_optional_groups()
HEAVY = ("torch", "boto3", "botocore", "sky", "fabric", "paramiko", "vastai", "kaggle")


def run_cli(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("argv", [["--help"], ["status"], ["status", "--json"]])
def test_start_up_imports_nothing_heavy(argv):
    """`python -X importtime` of `launch --help` / `launch status` shows no torch, boto3 or sky."""
    code = "import sys; from launcher.cli import main; sys.argv = ['launch'] + sys.argv[1:]; main()"
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *argv],
                       capture_output=True, text=True, env=os.environ.copy())
    assert r.returncode == 0, r.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in r.stderr.splitlines()
                if line.startswith("import time:")}
    assert "launcher" in imported  # the measurement itself works
    assert not imported & set(HEAVY), imported & set(HEAVY)


@pytest.mark.parametrize("cmd", ["up", "status", "logs", "down"])
def test_every_command_has_help_with_examples(cmd):
    r = run_cli(cmd, "--help")
    assert r.exit_code == 0
    assert "Examples:" in r.output and f"launch {cmd}" in r.output


def test_status_json_empty_list():
    r = run_cli("status", "--json")
    assert r.exit_code == 0 and json.loads(r.output) == []


def test_unknown_job_is_a_one_line_error():
    r = CliRunner().invoke(cli, ["logs", "42"])
    assert r.exit_code == 1
    assert r.output.strip().startswith("Error: No job '42'")
    assert "Traceback" not in r.output


def test_bad_task_is_a_one_line_error(tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text("name: x\nresources:\n  acelerators: V100:1\nrun: echo\n")
    r = CliRunner().invoke(cli, ["up", str(t)])
    assert r.exit_code == 1
    assert "line 3: unknown key 'acelerators' in resources (did you mean 'accelerators'?)" in r.output


def test_bad_chaos_spec_is_rejected_before_anything_runs(tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text("run: echo\n")
    r = CliRunner().invoke(cli, ["up", str(t), "--chaos", "nuke@3s"])
    assert r.exit_code == 1 and "bad drill 'nuke@3s'" in r.output
    assert json.loads(run_cli("status", "--json").output) == []  # no job was recorded


def test_unconfigured_infra_is_a_one_line_error(tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text("run: echo\n")
    r = CliRunner().invoke(cli, ["up", str(t), "--infra", "ssh/nopool", "-d"])
    assert r.exit_code == 1 and r.output.startswith("Error:")


def test_usage_error_exits_2():
    r = CliRunner().invoke(cli, ["up"])
    assert r.exit_code == 2
